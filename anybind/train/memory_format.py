"""``trainer.channels_last=true``: convolution kernels stored channels-last (NHWC) while training.

On CPU, oneDNN runs a 2-D convolution whose kernel is channels-last in NHWC whatever the input's layout, and its
forward and backward are faster that way for the small early-convolution stems of the world experiments (image
and audio towers: ~15 % of the tower's step, docs/benchmarks.md). Values are the same up to float rounding.
Checkpoints store plain contiguous tensors either way.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_kernels_channels_last(model: nn.Module) -> int:
    """Store every ``Conv2d`` kernel of ``model`` channels-last in place (same parameters); returns how many."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d) and mod.weight.ndim == 4:
            mod.weight.data = mod.weight.data.contiguous(memory_format=torch.channels_last)
            n += 1
    return n
