"""``trainer.channels_last``: convolution kernels stored channels-last (NHWC) while training.

On CPU, oneDNN runs a 2-D convolution whose kernel is channels-last in NHWC whatever the input's layout. For the
early-convolution stems of the world experiments that makes the image and video towers' forward and backward
about a quarter faster, and the audio tower's (one input channel) slower, so the option takes either ``true``
(every tower) or a list of modalities (docs/benchmarks.md). Values are the same up to float rounding.
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


def channels_last_towers(model: nn.Module, which) -> int:
    """``trainer.channels_last``: ``True`` for every tower of ``model`` (an ``AnyBindModel``), or the modalities
    listed; returns how many kernels changed. A listed modality the model lacks is an error naming it."""
    if which is True:
        return conv_kernels_channels_last(model)
    names = [which] if isinstance(which, str) else [str(m) for m in which]  # channels_last=image: one tower
    missing = [m for m in names if m not in model.encoders]
    if missing:
        raise ValueError(f"trainer.channels_last={names}: this run has no {', '.join(missing)} tower "
                         f"(towers: {', '.join(model.encoders)})")
    return sum(conv_kernels_channels_last(model.encoders[m]) for m in names)
