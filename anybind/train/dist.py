"""The process-group helpers of :mod:`anybind.dist`, under the name the training code imports."""

from anybind.dist import *  # noqa: F401,F403
from anybind.dist import (all_gather_no_grad, all_reduce_sum, barrier, broadcast_object, cleanup,  # noqa: F401
                          env_rank, env_world_size, export_submitit_env, gather_with_grad, init_distributed,
                          is_initialized, is_main, rank, world_size)
