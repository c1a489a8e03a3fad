"""Process-group helpers for torchrun (DDP / FSDP) runs; everything degrades to a no-op in one process.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them. Rank 0 owns the run
directory and every file written in it; other ranks learn the directory through :func:`broadcast_object`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """World size announced by the launcher (before the process group exists)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def export_submitit_env() -> None:
    """Inside a multi-task SLURM job started by submitit (``hydra/launcher=slurm``), set the variables torchrun
    would have set (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) from the job."""
    if "WORLD_SIZE" in os.environ or "SLURM_JOB_ID" not in os.environ:
        return
    try:
        import submitit

        job = submitit.JobEnvironment()
        tasks, nodes = job.num_tasks, job.num_nodes
    except Exception:  # not installed, or not a submitit job
        return
    if tasks <= 1:
        return
    os.environ.update(
        RANK=str(job.global_rank), WORLD_SIZE=str(tasks), LOCAL_RANK=str(job.local_rank),
        LOCAL_WORLD_SIZE=str(max(1, tasks // max(1, nodes))), MASTER_ADDR=job.hostnames[0],
        MASTER_PORT=os.environ.get("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000)),
    )


def init_distributed(device_type: str, timeout_s: float = 1800.0) -> bool:
    """Join the process group when launched by torchrun with more than one process; returns whether it did.

    NCCL on CUDA, gloo on CPU. Each rank uses the CUDA device ``LOCAL_RANK``.
    """
    export_submitit_env()
    if env_world_size() <= 1 or is_initialized():
        return is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def cleanup() -> None:
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable values only; used for the run directory and small facts)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place, no autograd); identity in one process."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dim 0 (equal shapes on every rank); no gradient."""
    if not is_initialized() or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the summed gradient of its own rows.

    Rank ``r``'s loss uses every rank's rows; the gradient of the sum of all ranks' losses with respect to the rows
    of rank ``k`` is the sum over ``r`` of ``r``'s gradient for chunk ``k``: a reduce-scatter (NCCL) or an
    all-reduce followed by taking this rank's chunk (gloo has no reduce-scatter).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        ctx.rows = x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        r, n = dist.get_rank(), ctx.rows
        if dist.get_backend() == dist.Backend.NCCL:
            mine = torch.empty_like(grad[:n])
            dist.reduce_scatter_tensor(mine, grad, op=dist.ReduceOp.SUM)
            return mine
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[r * n:(r + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0, differentiable; identity in one process."""
    if not is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
