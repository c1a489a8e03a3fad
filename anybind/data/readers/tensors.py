"""Preprocessed tensor files (``.pt`` / ``.pth`` / ``.npy`` / ``.npz``) for the ImageBind-compatible modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, torch_load_problem
from ..files import check_file, load_array

__all__ = ["read_tensor_file"]


def read_tensor_file(path: str | Path, modality: str = "tensor") -> torch.Tensor:
    """A preprocessed tensor: ``.pt``/``.pth`` (``torch.load(weights_only=True)``; a tensor, or a dict/list holding
    exactly one), ``.npy`` or ``.npz`` (first array). Used by the ImageBind-compatible depth/thermal/imu modalities.
    Files over ``LIMITS.max_tensor_file_bytes`` are refused unread."""
    path = check_file(path, modality, max_bytes="max_tensor_file_bytes")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = list(obj.values())
            if isinstance(obj, (list, tuple)):
                tensors = [o for o in obj if isinstance(o, torch.Tensor)]
                if len(tensors) != 1:
                    raise InputError(path, modality, f"expected one tensor in the file, found {len(tensors)}")
                obj = tensors[0]
            if not isinstance(obj, torch.Tensor):
                raise InputError(path, modality, f"expected a tensor, found {type(obj).__name__}")
            return obj
        if suffix in (".npy", ".npz"):
            arr = load_array(path, modality, max_bytes="max_tensor_file_bytes")
            return torch.from_numpy(np.ascontiguousarray(arr))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, modality, f"could not be loaded as a tensor ({torch_load_problem(exc)})") from exc
    raise InputError(path, modality, f"unsupported tensor file extension {suffix!r} (expected .pt, .pth, .npy, "
                                     f".npz)")
