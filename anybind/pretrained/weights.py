"""Building library towers without a second copy of their weights, and loading a local file into them loudly.

* :func:`params_on_meta`: while active, every ``nn.Parameter`` a module registers is moved to the meta device
  (shapes only, no memory); buffers stay real (CLIP's causal mask, relative-position tables are computed, not
  stored). A tower built this way is then filled by :func:`assign_state`, which adopts the file's tensors
  (``load_state_dict(assign=True)``): the weights exist once in memory.
* :func:`deferred_weights`: :func:`anybind.load` builds towers inside it; a builder that sees
  :func:`weights_deferred` true builds its architecture on the meta device because the checkpoint is about to
  supply every tensor (no random init, no read of the original pretrained file).
* :func:`weights_source`: provenance of a local weights file (path, size, sha256) recorded in checkpoint sidecars.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

_DEFERRED = contextvars.ContextVar("anybind_weights_deferred", default=False)


@contextlib.contextmanager
def deferred_weights() -> Iterator[None]:
    """Builders called inside may leave parameters on the meta device: the caller assigns every tensor."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def weights_deferred() -> bool:
    return _DEFERRED.get()


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Parameters registered inside this block live on the meta device; buffers are created normally.

    Each parameter is allocated (and initialised) for an instant and then dropped, so the peak is one layer, not
    the model. ``module.to(...)`` inside the block moves the real tensors and leaves meta ones where they are (a
    library that ends its constructor with ``model.to(device)`` still works). Not thread-safe: it patches
    ``nn.Module.register_parameter`` and ``nn.Module.to`` for its duration.
    """
    original, original_to = nn.Module.register_parameter, nn.Module.to

    @functools.wraps(original)
    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    def to(module: nn.Module, *args, **kwargs) -> nn.Module:
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)

        def convert(t: torch.Tensor) -> torch.Tensor:
            cast = dtype if dtype is not None and t.is_floating_point() else None
            return t.to(dtype=cast) if t.is_meta else t.to(device, cast, non_blocking)

        return module._apply(convert)

    nn.Module.register_parameter, nn.Module.to = register, to
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.to = original, original_to


def assign_state(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, what: str) -> nn.Module:
    """Load ``state`` into ``module`` exactly (every key, every shape), adopting its tensors.

    ``source`` (the file) and ``what`` (e.g. ``"open_clip ViT-B-32 image tower"``) name the problem in the error:
    the first mismatched shapes, then missing and unexpected keys.
    """
    own = module.state_dict(keep_vars=True)
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if bad or missing or unexpected:
        parts = []
        if bad:
            parts.append(f"{len(bad)} shape mismatch(es): {'; '.join(bad[:4])}")
        if missing:
            parts.append(f"{len(missing)} missing key(s): {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {unexpected[:5]}")
        raise CheckpointError(f"weights {source} do not fit the {what}: {', '.join(parts)} "
                              "(is it a checkpoint of this architecture?)")
    dtypes = {k: v.dtype for k, v in own.items()}
    state = {k: (v if not v.is_floating_point() or v.dtype == dtypes[k] else v.to(dtypes[k])) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module


def meta_parameters(module: nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (not filled by any checkpoint)."""
    return [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]


def weights_source(path: str | Path, **info) -> dict:
    """Provenance of a local weights file: ``{"file", "bytes", "sha256", **info}`` (library, model name...)."""
    p = Path(path).resolve()
    st = p.stat()
    return {**info, "file": p.name, "bytes": st.st_size, "sha256": _digest(str(p), st.st_size, st.st_mtime_ns)}


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per (path, size, mtime): both towers of one CLIP file hash it once."""
    from ..io import sha256_file

    return sha256_file(path)
