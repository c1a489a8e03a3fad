"""Helpers shared by the transforms: input description, numpy -> tensor, strict contract reading."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ...errors import ContractError

# keys any contract may carry besides a transform's own: ``compat`` selects a registered preprocessing variant
META_KEYS = frozenset({"compat"})


def as_tensor(raw: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(raw)) if isinstance(raw, np.ndarray) else raw


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def read_contract(contract: Mapping[str, Any], transform: str, required: Iterable[str],
                  optional: Mapping[str, Any] | None = None) -> dict:
    """The values a transform factory takes from ``contract``: every ``required`` key, ``optional`` keys (with
    their documented defaults). A missing required key or a key the transform does not know raises
    :class:`~anybind.errors.ContractError` naming the transform and the keys it expects."""
    if not isinstance(contract, Mapping):
        raise ContractError(f"{transform}: the input contract must be a mapping, got {type(contract).__name__}")
    required, optional = tuple(required), dict(optional or {})
    expected = ", ".join([*required, *(f"{k} (optional)" for k in optional)])
    missing = [k for k in required if k not in contract]
    if missing:
        raise ContractError(f"{transform}: the input contract lacks {', '.join(map(repr, missing))} (it expects "
                            f"{expected}); got {sorted(contract)}")
    unknown = sorted(k for k in contract if k not in required and k not in optional and k not in META_KEYS)
    if unknown:
        raise ContractError(f"{transform}: the input contract has keys it does not understand: "
                            f"{', '.join(map(repr, unknown))} (it expects {expected})")
    return {**optional, **{k: contract[k] for k in (*required, *optional) if k in contract}}


def positive_int(value: Any, key: str, transform: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ContractError(f"{transform}: contract key {key!r} must be a positive integer, got {value!r}")
    return int(_bounded(value, key, transform))


def positive_float(value: Any, key: str, transform: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ContractError(f"{transform}: contract key {key!r} must be a positive number, got {value!r}")
    return float(_bounded(value, key, transform))


def _bounded(value: Any, key: str, transform: str) -> Any:
    """``value`` if it is within the key's bound (:data:`anybind.modality.CONTRACT_BOUNDS`)."""
    from ...modality import CONTRACT_BOUNDS

    bound = CONTRACT_BOUNDS.get(key)
    if bound is not None and value > bound:
        raise ContractError(f"{transform}: contract key {key!r} is {value!r}, over its bound {bound} (no model needs "
                            "more; the contract is damaged or hostile)")
    return value


def triple(value: Any, key: str, transform: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise ContractError(f"{transform}: contract key {key!r} must hold 3 numbers (one per RGB channel), got "
                            f"{value!r}")
    return out
