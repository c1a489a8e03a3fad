"""Reduced-precision inference for CPU towers: dynamic int8 for Linear layers.

``quantize_dynamic_int8(tower)`` returns a copy whose ``nn.Linear`` layers hold int8 weights (per-channel scales)
and quantize their activations on the fly, through PyTorch's eager dynamic quantization. On CPUs with VNNI the
Transformer's matrix products, which are most of a ViT's time, run about 4x faster than in float32 (measured in
docs/benchmarks.md, "ImageBind size"); convolutions, attention products and norms stay float32. The outputs are
not those of the float32 tower: report the parity error next to any speed-up (``anybind-bench imagebind
--precisions fp32,bf16,int8`` does). Never the default anywhere in anybind.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_dynamic_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (left untouched) with dynamically quantized int8 ``nn.Linear`` layers, for CPU inference."""
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise ValueError("dynamic int8 quantization runs on the CPU: move the tower there first (.cpu())")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # removed from a future torch: its successor is the torchao package
        raise ImportError("this torch has no torch.ao.quantization.quantize_dynamic; dynamic int8 needs it "
                          "(or the torchao package's int8 dynamic quantization)") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, once per call, says nothing about the result
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=False)
