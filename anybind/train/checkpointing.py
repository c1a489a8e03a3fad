"""Training checkpoints: the model (``anybind.save_model``) plus a training-state file, both loadable without pickle.

Layout inside a run directory::

    checkpoints/step_000500/model.safetensors + model.json   the model (anybind.load works on it)
    checkpoints/step_000500/state.safetensors + state.json   optimizer, scheduler, scaler, loss, RNGs, data position
    checkpoints/last.safetensors + last.json                  the newest model (hard links into the newest step)
    checkpoints/latest.json                                   {"step": 500, "path": "step_000500"}, written last

A step directory is written under a temporary name and renamed when complete; ``latest.json`` is replaced
atomically afterwards, so a run killed at any instant resumes from a complete checkpoint.

The state file stores every tensor in safetensors and everything else as JSON (a tree where tensors are replaced
by ``{"__tensor__": key}``, tuples by ``{"__tuple__": [...]}`` and integer dict keys by ``{"__intkeys__": {...}}``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_json, load_tensors, save_tensors
from ..errors import CheckpointError

STATE_KIND = "train_state"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _flatten(torch.from_numpy(np.ascontiguousarray(obj)), tensors, path)
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):
            return {"__intkeys__": {str(k): _flatten(v, tensors, f"{path}.{k}") for k, v in obj.items()}}
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"state key types {sorted({type(k).__name__ for k in obj})} at {path!r} cannot be saved")
        return {k: _flatten(v, tensors, f"{path}.{k}" if path else k) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"training state value of type {type(obj).__name__} at {path!r} cannot be saved")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__intkeys__"}:
            return {int(k): _unflatten(v, tensors) for k, v in obj["__intkeys__"].items()}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | Path, state: dict) -> None:
    """Save a tree of dicts / lists / tuples / scalars / tensors as ``path.safetensors`` + ``path.json``."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors, "")
    save_tensors(path, tensors, {"kind": STATE_KIND, "tree": tree})


def load_state(path: str | Path) -> dict:
    tensors, meta = load_tensors(path)
    if meta.get("kind") != STATE_KIND:
        raise CheckpointError(f"{path} is not a training-state file (kind={meta.get('kind')!r})")
    return _unflatten(meta["tree"], tensors)


def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class CheckpointManager:
    """Writes, lists and prunes the step checkpoints of one run directory (call on rank 0 only)."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, int(keep_last))

    @property
    def last_model(self) -> Path:
        return self.dir / "last.safetensors"

    def save(self, step: int, model, state: dict, *, config: dict | None = None, extra: dict | None = None) -> Path:
        from ..checkpoint import save_model

        name = f"step_{step:06d}"
        final, tmp = self.dir / name, self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(tmp / "model", model, config=config, extra=extra)
        save_state(tmp / "state", state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _link_or_copy(final / "model.safetensors", self.dir / "last.safetensors")
        _link_or_copy(final / "model.json", self.dir / "last.json")
        atomic_write_json(self.dir / "latest.json", {"step": step, "path": name})
        self._prune(keep=name)
        return final

    def _prune(self, keep: str) -> None:
        steps = sorted(p for p in self.dir.glob("step_*") if p.is_dir())
        for old in steps[:-self.keep_last]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        pointer = self.dir / "latest.json"
        if not pointer.exists():
            return None
        try:
            path = self.dir / json.loads(pointer.read_text())["path"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{pointer} is damaged: {exc}") from exc
        return path if (path / "state.json").exists() else None


def find_resume_checkpoint(resume: str, run_dir: str | Path) -> Path | None:
    """The step directory to resume from.

    ``resume="latest"``: the newest checkpoint of ``run_dir``; if it has none, the newest among the sibling runs
    (``runs/<name>/*``: Hydra gives every launch a fresh time-stamped directory). Otherwise ``resume`` is a step
    directory, a ``checkpoints`` directory or a run directory. ``None`` when ``latest`` finds nothing (a fresh
    start); an explicit path that holds no checkpoint raises.
    """
    run_dir = Path(run_dir)
    if resume == "latest":
        own = CheckpointManager(run_dir).latest()
        if own is not None:
            return own
        found = [c for c in (CheckpointManager(d).latest() for d in run_dir.parent.iterdir() if d.is_dir() and d != run_dir)
                 if c is not None] if run_dir.parent.is_dir() else []
        return max(found, key=lambda c: (c / "state.json").stat().st_mtime) if found else None
    p = Path(resume).expanduser()
    if (p / "state.json").exists():
        return p
    for cand in (p, p / "checkpoints"):
        if (cand / "latest.json").exists():
            latest = CheckpointManager(cand.parent if cand.name == "checkpoints" else cand).latest()
            if latest is not None:
                return latest
    raise CheckpointError(f"resume={resume!r}: no training checkpoint there (expected a step directory with "
                          f"state.json, or a run directory with checkpoints/latest.json)")
