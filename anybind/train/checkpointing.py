"""Training checkpoints: the model (``anybind.save_model``) plus a training-state file, both loadable without pickle.

Layout inside a run directory::

    checkpoints/step_000500/model.safetensors + model.json   the model (anybind.load works on it)
    checkpoints/step_000500/state.safetensors + state.json   optimizer, scheduler, scaler, loss, RNGs, data position
    checkpoints/last -> step_000500                           THE pointer: a link to the newest complete step
    checkpoints/last.safetensors -> last/model.safetensors    fixed links through it, for anybind.load(".../last")
    checkpoints/last.json -> last/model.json                  and for tools that want a file

A save writes a new step directory under a temporary name (a second save of one step gets a fresh name such as
``step_000500.1``: a published directory is never rewritten), renames it, checks it, and only then switches
``last`` with one atomic ``os.replace``; older step directories are deleted after that. So ``last`` (and every name
reached through it) always leads to a complete checkpoint, whatever instant a run is killed at; a run killed before
its first save has no ``last``. ``resume=latest`` follows ``last`` of the run's own directory only.

The state file stores every tensor in safetensors and everything else as JSON (a tree where tensors are replaced
by ``{"__tensor__": key}``, tuples by ``{"__tuple__": [...]}`` and integer dict keys by ``{"__intkeys__": {...}}``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_tensors, read_sidecar, save_tensors, tensor_shapes
from ..errors import CheckpointError
from ..io import clean_temp_files, fsync_dir

log = logging.getLogger(__name__)

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


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], source: str = "training state") -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"{source} names tensor {key!r}, which its .safetensors file does not hold "
                                      f"({len(tensors)} tensors there); the state file is damaged")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            return tuple(_unflatten(v, tensors, source) for v in obj["__tuple__"])
        if set(obj) == {"__intkeys__"}:
            try:
                return {int(k): _unflatten(v, tensors, source) for k, v in obj["__intkeys__"].items()}
            except (AttributeError, ValueError):
                raise CheckpointError(f"{source}: an integer-keyed mapping has keys that are not integers") from None
        return {k: _unflatten(v, tensors, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors, source) for v in obj]
    return obj


def save_state(path: str | Path, state: dict) -> None:
    """Save a tree of dicts / lists / tuples / scalars / tensors as ``path.safetensors`` + ``path.json``."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors, "")
    save_tensors(path, tensors, {"kind": STATE_KIND, "tree": tree})


def load_state(path: str | Path) -> dict:
    tensors, meta = load_tensors(path)
    sidecar = Path(path).with_suffix(".json") if Path(path).suffix != ".json" else Path(path)
    if meta.get("kind") != STATE_KIND:
        raise CheckpointError(f"{sidecar} is not a training-state file (kind={meta.get('kind')!r})")
    if not isinstance(meta.get("tree"), dict):
        raise CheckpointError(f"training state {sidecar} holds no state tree (key 'tree'); the file is damaged")
    return _unflatten(meta["tree"], tensors, f"training state {sidecar}")


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


_STEP = re.compile(r"step_(\d{6,})(?:\.(\d+))?")
LINKS = {"last.json": "last/model.json", "last.safetensors": "last/model.safetensors"}  # fixed, through `last`


def _step_key(name: str) -> tuple[int, int] | None:
    m = _STEP.fullmatch(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _replace_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (relative) with one atomic replace; readers see the old target or the new."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except IsADirectoryError:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{link} is a folder, not anybind's checkpoint link; move it away") from None


class CheckpointManager:
    """Writes, lists and prunes the step checkpoints of one run directory (call :meth:`save` on rank 0 only)."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, int(keep_last))

    @property
    def last_model(self) -> Path:
        return self.dir / "last.safetensors"

    def steps(self) -> list[Path]:
        """The step directories, oldest first (by step, then by re-save number)."""
        found = [p for p in self.dir.iterdir() if _step_key(p.name) and p.is_dir() and not p.is_symlink()] \
            if self.dir.is_dir() else []
        return sorted(found, key=lambda p: _step_key(p.name))

    def _fresh_name(self, step: int) -> str:
        name, n = f"step_{step:06d}", 0
        while (self.dir / name).exists() or (self.dir / f".{name}.tmp").exists():
            n += 1
            name = f"step_{step:06d}.{n}"
        return name

    def _clean_interrupted(self) -> None:
        """What a killed save left: its temporary step directory and link; temp files of its atomic writes."""
        for p in self.dir.glob(".step_*.tmp"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
        for p in self.dir.glob(".last*.tmp"):
            if p.is_symlink():
                p.unlink(missing_ok=True)
        clean_temp_files(self.dir)

    def save(self, step: int, model, state: dict, *, config: dict | None = None, extra: dict | None = None) -> Path:
        from ..checkpoint import save_model

        self.dir.mkdir(parents=True, exist_ok=True)
        self._clean_interrupted()
        self._make_links()
        name = self._fresh_name(step)
        final, tmp = self.dir / name, self.dir / f".{name}.tmp"
        tmp.mkdir()
        save_model(tmp / "model", model, config=config, extra=extra)
        save_state(tmp / "state", state)
        fsync_dir(tmp)
        os.rename(tmp, final)  # complete; not yet published
        fsync_dir(self.dir)
        self._check(final)
        _replace_link(self.dir / "last", name)  # the commit: every published name now leads to the new step
        fsync_dir(self.dir)
        if (self.dir / "latest.json").exists():  # the pointer of earlier versions, superseded by `last`
            (self.dir / "latest.json").unlink()
        self._prune(keep=name)
        return final

    def _make_links(self) -> None:
        """The fixed links through ``last``, made before the first commit so that one switch publishes all names.
        A run of the earlier layout (``latest.json`` + a ``last.*`` file pair) first gets ``last`` on the step its
        ``latest.json`` names, so its names keep leading to that checkpoint while they become links."""
        last = self.dir / "last"
        if not last.is_symlink() and not last.exists() and (self.dir / "latest.json").exists():
            try:
                _replace_link(last, self.latest().name)
            except CheckpointError as exc:  # a damaged or dangling earlier pointer: the new save replaces it
                log.warning("not carrying the earlier pointer %s over: %s", self.dir / "latest.json", exc)
        for link, target in LINKS.items():
            p = self.dir / link
            if not (p.is_symlink() and os.readlink(p) == target):
                _replace_link(p, target)
        fsync_dir(self.dir)

    def _check(self, step_dir: Path) -> None:
        """A step directory is complete: both sidecars hold a digest and both weight files a readable header."""
        for part in ("model", "state"):
            weights, _, _ = read_sidecar(step_dir / part)
            tensor_shapes(weights)

    def _prune(self, keep: str) -> None:
        steps = [p for p in self.steps() if p.name != keep]
        for old in steps[:len(steps) - (self.keep_last - 1)]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The step directory ``last`` points to; ``None`` before the first save. A pointer that leads outside
        this run's checkpoints or to an incomplete step raises."""
        link = self.dir / "last"
        if link.is_symlink():
            return self._target(link, os.readlink(link))
        if link.exists():
            raise CheckpointError(f"{link} is not anybind's checkpoint link (a link to a step directory); move it away")
        legacy = self.dir / "latest.json"  # runs written by earlier versions
        if legacy.exists():
            try:
                target = json.loads(legacy.read_text())["path"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{legacy} is damaged: {exc}") from exc
            return self._target(legacy, target)
        return None

    def _target(self, pointer: Path, target: Any) -> Path:
        if not isinstance(target, str) or _step_key(target) is None:
            raise CheckpointError(f"{pointer} points to {target!r}: a checkpoint pointer names a step directory of "
                                  f"its own run ({self.dir}/step_NNNNNN), never a path elsewhere")
        path = self.dir / target
        missing = [f for f in ("model.json", "model.safetensors", "state.json", "state.safetensors")
                   if not (path / f).exists()]
        if missing:
            raise CheckpointError(f"{pointer} points to {path}, which lacks {', '.join(missing)}; give "
                                  f"resume=<a complete step directory> (found: {[p.name for p in self.steps()]})")
        return path


def find_resume_checkpoint(resume: str, run_dir: str | Path) -> Path | None:
    """The step directory to resume from.

    ``resume="latest"``: the newest checkpoint of ``run_dir`` itself (``None`` when it has none: a fresh start;
    another run's checkpoints are never picked up). Otherwise ``resume`` is a step directory, a ``checkpoints``
    directory or a run directory, and one holding no checkpoint raises.
    """
    run_dir = Path(run_dir)
    if resume == "latest":
        return CheckpointManager(run_dir).latest()
    p = Path(resume).expanduser()
    if (p / "state.json").exists():
        return p.resolve() if p.is_symlink() else p
    for run in (p.parent if p.name == "checkpoints" else None, p):
        if run is not None and (run / "checkpoints").is_dir():
            latest = CheckpointManager(run).latest()
            if latest is not None:
                return latest
    raise CheckpointError(f"resume={resume!r}: no training checkpoint there (expected a step directory with "
                          f"state.json, or a run directory with checkpoints/last)")
