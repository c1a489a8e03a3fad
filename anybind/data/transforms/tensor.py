"""Identity transform for preprocessed tensors (the ImageBind-compatible depth, thermal and imu)."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ContractError, InputError
from ._common import as_tensor, describe, read_contract

__all__ = ["IdentityTransform", "identity_transform"]


class IdentityTransform:
    """Pass a preprocessed tensor through (ImageBind-compatible depth/thermal/imu). With ``shape`` in the
    contract, the tensor must have exactly that shape; floating tensors come back as float32."""

    def __init__(self, modality: str = "tensor", shape: tuple[int, ...] | None = None):
        self.modality = modality
        self.shape = tuple(int(s) for s in shape) if shape is not None else None

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        x = as_tensor(raw)
        if not isinstance(x, torch.Tensor):
            raise InputError(source, self.modality, f"expected a tensor, got {describe(x)}")
        if self.shape is not None and tuple(x.shape) != self.shape:
            raise InputError(source, self.modality, f"expected shape {self.shape}, got {describe(x)}")
        return x.float() if x.is_floating_point() else x

    def __repr__(self) -> str:
        return f"IdentityTransform(modality={self.modality!r}, shape={self.shape})"




def identity_transform(contract: dict) -> IdentityTransform:
    """Contract keys (both optional): ``modality`` (names errors; default ``tensor``), ``shape`` (the exact shape
    every tensor must have; default: any)."""
    name = "identity_transform"
    c = read_contract(contract, name, (), {"modality": "tensor", "shape": None})
    shape = c["shape"]
    if shape is not None:
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ContractError(f"{name}: contract key 'shape' must be a list of sizes, got {shape!r}") from None
    return IdentityTransform(str(c["modality"]), shape)
