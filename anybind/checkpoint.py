"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, loaded without running code.

Layout for a checkpoint named ``model``::

    model.safetensors   tensors (loaded with safetensors: no pickle, no code execution)
    model.json          {"format": "anybind", "version": 1, "embed_dim": D,
                         "encoders": {modality: {"name", "kwargs", "input_contract"}}, "config": {...},
                         "sha256": "<hex of model.safetensors>"}

The sidecar is written last, so a checkpoint whose sidecar exists is complete; the digest detects damage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import atomic_write_bytes, atomic_write_json, sha256_file  # noqa: F401 - re-exported
from .errors import CheckpointError
from .pretrained.weights import deferred_weights, meta_parameters, params_on_meta

FORMAT = "anybind"
VERSION = 1


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with a storage each (safetensors refuses shared storage); only what needs it is copied."""
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            v = v.clone()
        elif ptr:
            seen.add(ptr)
        flat[k] = v
    return flat


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> str:
    """Save tensors atomically as safetensors plus a sidecar; returns the weights' sha256.

    The file is written straight from the tensors' memory (no serialized copy), so saving a multi-GB model needs
    no extra memory of its size.
    """
    from safetensors.torch import save_file

    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_plain_tensors(tensors), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    digest = sha256_file(weights)
    meta = {"format": FORMAT, "version": VERSION, **(metadata or {}), "sha256": digest}
    atomic_write_json(sidecar, meta)
    return digest


def load_tensors(path: str | Path, *, verify: bool = True, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    weights, sidecar = _paths(path)
    if not sidecar.exists() and not weights.exists():
        raise CheckpointError(f"no checkpoint at {path}: neither {weights} nor {sidecar} exists")
    if not sidecar.exists() or not weights.exists():
        raise CheckpointError(f"checkpoint {weights} is incomplete: expected {weights.name} and {sidecar.name}")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not an anybind checkpoint sidecar (format={meta.get('format')!r})")
    if verify and meta.get("sha256") and sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"checkpoint {weights} is damaged: its sha256 does not match {sidecar.name}")
    try:
        return load_file(str(weights), device=device), meta
    except Exception as exc:
        raise CheckpointError(f"checkpoint {weights} could not be read: {exc}") from exc


def save_model(path: str | Path, model, config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Save an :class:`~anybind.model.AnyBindModel` with everything needed to rebuild it."""
    meta = {"kind": "model", "embed_dim": model.embed_dim, "encoders": model.encoder_spec(), "config": dict(config or {}),
            **(extra or {})}
    for m, spec in meta["encoders"].items():
        if not spec["name"]:
            raise CheckpointError(f"encoder for {m!r} was not built from the registry; it cannot be saved by name")
        source = getattr(model.encoders[m], "weights_source", None)
        if source:  # a library tower: library, model name, build config, sha256 of the weights it started from
            spec["source"] = dict(source)
    save_tensors(path, model.state_dict(), meta)
    return _paths(path)[0]


def load(path: str | Path, *, device: str | torch.device = "cpu", modalities: list[str] | None = None, strict: bool = True):
    """Load a trained or converted anybind checkpoint. ``modalities`` loads only those towers."""
    from .model import create_model

    state, meta = load_tensors(path)
    specs = meta.get("encoders") or {}
    if modalities is not None:
        missing = [m for m in modalities if m not in specs]
        if missing:
            raise CheckpointError(f"checkpoint {path} has no tower for {missing}; it has {sorted(specs)}")
        specs = {m: specs[m] for m in modalities}
        state = {k: v for k, v in state.items() if k.split(".")[1] in specs}
    # every tower builds on the meta device (no random initialisation to throw away: seconds for a large tower) and
    # adopts the checkpoint's tensors below; buffers a builder computes are made as usual
    with deferred_weights(), params_on_meta():
        model = create_model({m: {"name": s["name"], **s.get("kwargs", {})} for m, s in specs.items()})
    for m, s in specs.items():  # the checkpoint's input contract wins (e.g. a converted model's preprocessing)
        model.encoders[m].input_contract = dict(s.get("input_contract") or model.encoders[m].input_contract)
        if s.get("source"):
            model.encoders[m].weights_source = dict(s["source"])
        if s.get("lora"):  # a LoRA-tuned tower: its adapters are in the weights
            from .lora import add_lora

            add_lora(model.encoders[m], **s["lora"])
    assign = bool(meta_parameters(model))  # adopt the file's tensors instead of copying them into meta ones
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    if strict and (missing or unexpected):
        raise CheckpointError(f"checkpoint {path} does not match its encoders: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if assign and meta_parameters(model):
        raise CheckpointError(f"checkpoint {path} lacks tensors of its library towers: {meta_parameters(model)[:5]}")
    model.checkpoint_meta = meta
    return model.to(device).eval()
