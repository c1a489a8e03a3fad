"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, loaded without running code.

Layout for a checkpoint named ``model``::

    model.safetensors   tensors (loaded with safetensors: no pickle, no code execution)
    model.json          {"format": "anybind", "version": 1, "embed_dim": D,
                         "encoders": {modality: {"name", "kwargs", "input_contract"}}, "config": {...},
                         "sha256": "<hex of model.safetensors>"}

Writing (:func:`save_tensors`): the new weights go to a hidden file named by their digest
(``.model.safetensors.<sha256[:16]>.pending``); then the sidecar naming that digest replaces the old one atomically
(the commit); then the weights take their final name. A reader that finds the pending file its sidecar names reads
it, so a kill at any instant leaves the previous pair or the new one, never a mix. The next save of the same name
finishes what a killed one committed and drops what it did not.

Reading: a sidecar reached through a link (``checkpoints/last``, ``checkpoints/last.json``) is resolved once and
the weights beside its target are read, so both files come from one checkpoint even while a trainer switches the
link. The sidecar must hold the weights' sha256 (a sidecar without one is refused, not trusted). :func:`load`
checks the sidecar before it allocates anything: the input contracts are bounded
(:data:`anybind.modality.CONTRACT_BOUNDS`), the towers are built on the meta device and their tensor shapes compared
with the file's header (no tensor read); a mismatch raises :class:`~anybind.errors.ShapeMismatchError` naming the
file, the tensor and both shapes.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import atomic_write_bytes, atomic_write_json, fsync_dir, sha256_file  # noqa: F401 - re-exported
from .errors import AnybindError, CheckpointError, ShapeMismatchError
from .pretrained.weights import deferred_weights, meta_parameters, params_on_meta

FORMAT = "anybind"
VERSION = 1
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is a few kB (a training state's tree a few MB); refuse to parse more
# Builder arguments a sidecar may give, bounded so that a hostile one cannot make even the meta-device build of the
# towers (modules, not tensors) take minutes: far above every released model.
ARCH_BOUNDS = {"depth": 1024, "num_layers": 1024, "layers": 1024, "num_heads": 1024, "heads": 1024, "width": 1 << 16,
               "embed_dim": 1 << 16, "mlp_ratio": 64, "patch_size": 4096, "kernel_size": 4096, "num_groups": 1 << 16,
               "group_size": 1 << 16}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _pending(weights: Path, digest: str) -> Path:
    """Where :func:`save_tensors` keeps new weights between writing them and committing their sidecar."""
    return weights.with_name(f".{weights.name}.{digest[:16]}.pending")


def _final_name(pending: Path) -> Path:
    return pending.with_name(pending.name[1:].rsplit(".", 2)[0])


def _settle(weights: Path, sidecar: Path) -> None:
    """Finish the commit a killed save made (its sidecar names pending weights); drop pending weights no sidecar
    names (a save killed before its commit) and the temp files of a killed save. Only files of the exact pending
    and temp patterns of this name are touched."""
    try:
        digest = json.loads(sidecar.read_text()).get("sha256") if sidecar.is_file() else None
    except (OSError, ValueError, AttributeError):
        digest = None
    keep = _pending(weights, digest) if isinstance(digest, str) and _SHA256.fullmatch(digest) else None
    for p in weights.parent.glob(f".{glob.escape(weights.name)}.*.pending"):
        if p == keep:
            os.replace(p, weights)
        else:
            p.unlink(missing_ok=True)
    for name in (weights.name, sidecar.name):  # half-written temp files of a killed save of this name
        for p in weights.parent.glob(f".{glob.escape(name)}.*.tmp"):
            p.unlink(missing_ok=True)


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
    no extra memory of its size. The pair is switched by one atomic replace of the sidecar (module docstring).
    """
    from safetensors.torch import save_file

    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    _settle(weights, sidecar)
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_plain_tensors(tensors), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        pending = _pending(weights, digest)
        os.replace(tmp, pending)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"format": FORMAT, "version": VERSION, **(metadata or {}), "sha256": digest}
    try:
        atomic_write_json(sidecar, meta)  # the commit: from here on readers take the new pair
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, weights)
    fsync_dir(weights.parent)
    return digest


def _read_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) as a reader opens them: a linked sidecar is resolved once and the weights beside its
    target are taken, so a link switched meanwhile cannot pair two checkpoints."""
    weights, sidecar = _paths(path)
    if sidecar.exists():
        real = sidecar.resolve()
        beside = real.with_suffix(".safetensors")
        if real != sidecar.absolute() and (beside.exists() or not weights.exists()):
            return beside, real
    return weights, sidecar


def read_sidecar(path: str | Path) -> tuple[Path, Path, dict]:
    """``(weights file, sidecar file, sidecar)`` of the checkpoint at ``path``, the sidecar checked (JSON object,
    anybind format, the weights' sha256 present). Nothing of the weights is read."""
    weights, sidecar = _read_paths(path)
    if not sidecar.exists() and not weights.exists():
        raise CheckpointError(f"no checkpoint at {path}: neither {weights} nor {sidecar} exists")
    if not sidecar.exists():
        raise CheckpointError(f"checkpoint {weights} is incomplete: expected {weights.name} and {sidecar.name}")
    size = sidecar.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is {size:,} bytes; a sidecar holds at most "
                              f"{MAX_SIDECAR_BYTES:,} (is it an anybind sidecar?)")
    try:
        meta = json.loads(sidecar.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{sidecar} is not an anybind checkpoint sidecar (format={found!r})")
    digest = meta.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise CheckpointError(f"checkpoint sidecar {sidecar} does not hold the sha256 of its weights (every anybind "
                              f"checkpoint has one); it was damaged or not written by anybind, so {weights.name} "
                              "cannot be verified and is not loaded")
    pending = _pending(weights, digest)
    if pending.exists():  # a save committed this sidecar and has not yet given the weights their final name
        return pending, sidecar, meta
    if not weights.exists():
        raise CheckpointError(f"checkpoint {weights} is incomplete: expected {weights.name} and {sidecar.name}")
    return weights, sidecar, meta


def _read_weights(weights: Path, sidecar: Path, meta: dict, *, verify: bool, device: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    for attempt in (weights, _final_name(weights)) if weights.name.endswith(".pending") else (weights,):
        try:
            if verify and sha256_file(attempt) != meta["sha256"]:
                raise CheckpointError(f"checkpoint {attempt} is damaged: its sha256 does not match {sidecar.name}")
            return load_file(str(attempt), device=device)
        except FileNotFoundError:  # the pending weights were just renamed to their final name: read that
            continue
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"checkpoint {attempt} could not be read: {exc}") from exc
    raise CheckpointError(f"checkpoint {weights} disappeared while it was read")


def load_tensors(path: str | Path, *, verify: bool = True, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and sidecar of the checkpoint at ``path`` (sha256 checked unless ``verify=False``)."""
    weights, sidecar, meta = read_sidecar(path)
    return _read_weights(weights, sidecar, meta, verify=verify, device=device), meta


def tensor_shapes(weights: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors file's header; no tensor data is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        if str(weights).endswith(".pending"):
            return tensor_shapes(_final_name(Path(weights)))
        raise
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
        folder = getattr(model.encoders[m], "asset_folder", None)
        if folder:  # a Hugging Face tower: its config and tokenizer files travel with the checkpoint
            from .pretrained.assets import MARKER, bundle, substitute

            weights = _paths(path)[0]
            rel = f"{weights.stem}.assets/{m}"
            bundle(folder, weights.parent / rel)
            spec["assets"] = rel
            spec["kwargs"]["path"] = MARKER
            spec["input_contract"] = substitute(spec["input_contract"], str(folder), MARKER)
    save_tensors(path, model.state_dict(), meta)
    return _paths(path)[0]


def _encoder_specs(meta: dict, sidecar: Path) -> dict[str, dict]:
    """The sidecar's towers, each checked: a registry name, builder arguments within :data:`ARCH_BOUNDS`, an input
    contract within :data:`anybind.modality.CONTRACT_BOUNDS`."""
    from .modality import check_contract_bounds

    specs = meta.get("encoders")
    if not isinstance(specs, dict) or not specs:
        raise CheckpointError(f"checkpoint sidecar {sidecar} names no towers (key 'encoders'); it is not a model "
                              "checkpoint")
    for m, s in specs.items():
        where = f"checkpoint sidecar {sidecar}, {m} tower"
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise CheckpointError(f"{where}: expected {{'name': <registry name>, 'kwargs': {{...}}}}, got {s!r:.200}")
        for key in ("kwargs", "input_contract", "lora", "source"):
            if s.get(key) is not None and not isinstance(s[key], dict):
                raise CheckpointError(f"{where}: {key!r} must be a mapping, got {type(s[key]).__name__}")
        for key, value in (s.get("kwargs") or {}).items():
            bound = ARCH_BOUNDS.get(key)
            if bound is not None and isinstance(value, (int, float)) and not 0 <= value <= bound:
                raise CheckpointError(f"{where}: builder argument {key}={value!r} is outside 0..{bound}")
        try:
            check_contract_bounds(s.get("input_contract") or {}, where)
        except AnybindError as exc:
            raise CheckpointError(str(exc)) from None
    return specs


# In-place ops that only change values: on the meta device there are none to change, and some (erfinv_, used by
# trunc_normal_ initialisation) run slow reference code there, so a meta build skips them.
_VALUE_OPS = frozenset({"erfinv_", "uniform_", "normal_", "clamp_", "clamp_min_", "clamp_max_", "mul_", "add_",
                        "sub_", "div_", "fill_", "zero_", "copy_", "exp_", "log_", "sqrt_", "neg_", "abs_",
                        "bernoulli_", "exponential_", "random_", "trunc_", "fmod_", "addcmul_", "addcdiv_"})


def _meta_build():
    from torch.overrides import TorchFunctionMode

    class SkipValueOps(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in _VALUE_OPS and args and isinstance(args[0], torch.Tensor) \
                    and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipValueOps()


def _build_towers(specs: Mapping[str, dict], sidecar: Path, *, meta_device: bool):
    """The model the sidecar describes (``meta_device``: shapes only, no memory), its builder errors named."""
    import contextlib

    from .model import AnyBindModel, create_model

    towers = {}
    for m, s in specs.items():
        try:
            # shapes only on the meta device; for the real model every parameter is created on meta too (no random
            # initialisation to throw away) and adopts the checkpoint's tensor, so the weights exist once in memory
            with deferred_weights(), (torch.device("meta") if meta_device else params_on_meta()), \
                    (_meta_build() if meta_device else contextlib.nullcontext()):
                towers[m] = create_model({m: {"name": s["name"], **(s.get("kwargs") or {})}}).encoders[m]
                if s.get("lora"):  # a LoRA-tuned tower: its adapters are in the weights
                    from .lora import add_lora

                    add_lora(towers[m], **s["lora"])
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - a builder's own error, named with the sidecar and tower
            raise CheckpointError(f"checkpoint sidecar {sidecar}: the {m} tower {s['name']!r} with "
                                  f"{s.get('kwargs') or {}} cannot be built ({type(exc).__name__}: {exc})") from exc
    dims = {t.embed_dim for t in towers.values()}
    if len(dims) != 1:
        raise CheckpointError(f"checkpoint sidecar {sidecar}: its towers disagree on embed_dim "
                              f"{ {m: t.embed_dim for m, t in towers.items()} }")
    return AnyBindModel(towers, dims.pop())


def _tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def check_against_file(skeleton, shapes: Mapping[str, tuple[int, ...]], weights: Path, sidecar: Path, *,
                       strict: bool = True) -> None:
    """Compare the tensors of ``skeleton`` (built from the sidecar, on the meta device) with the file's shapes."""
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    bad = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if bad:
        k = bad[0]
        more = f"; {len(bad) - 1} more tensor(s) differ, e.g. {bad[1:4]}" if len(bad) > 1 else ""
        raise ShapeMismatchError(weights, k, expected[k], shapes[k],
                                 f" ({sidecar.name} describes another architecture than the weights hold{more})")
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if strict and (missing or unexpected):
        raise CheckpointError(f"checkpoint {weights} does not match the towers {sidecar.name} describes: "
                              f"{len(missing)} missing tensor(s) {missing[:5]}, {len(unexpected)} unexpected "
                              f"{unexpected[:5]}")
    need, have = _tensor_bytes(skeleton), weights.stat().st_size
    if need > 2 * have + (256 << 20):
        raise CheckpointError(f"checkpoint sidecar {sidecar} describes towers of {need / 2**30:.1f} GiB but "
                              f"{weights.name} holds {have / 2**20:.1f} MiB; refusing to build them")


def load(path: str | Path, *, device: str | torch.device = "cpu", modalities: list[str] | None = None, strict: bool = True):
    """Load a trained or converted anybind checkpoint. ``modalities`` loads only those towers.

    The sidecar is checked against the file's tensor shapes before any tower is allocated (module docstring).
    """
    weights, sidecar, meta = read_sidecar(path)
    specs = _encoder_specs(meta, sidecar)
    shapes = tensor_shapes(weights)
    if modalities is not None:
        missing = [m for m in modalities if m not in specs]
        if missing:
            raise CheckpointError(f"checkpoint {path} has no tower for {missing}; it has {sorted(specs)}")
        specs = {m: specs[m] for m in modalities}
        shapes = {k: v for k, v in shapes.items() if k.split(".")[1] in specs}
    if any(s.get("assets") for s in specs.values()):
        specs = _with_assets(path, specs)
    check_against_file(_build_towers(specs, sidecar, meta_device=True), shapes, weights, sidecar, strict=strict)
    state = _read_weights(weights, sidecar, meta, verify=True, device="cpu")
    if modalities is not None:
        state = {k: v for k, v in state.items() if k.split(".")[1] in specs}
    model = _build_towers(specs, sidecar, meta_device=False)
    for m, s in specs.items():  # the checkpoint's input contract wins (e.g. a converted model's preprocessing)
        model.encoders[m].input_contract = dict(s.get("input_contract") or model.encoders[m].input_contract)
        if s.get("source"):
            model.encoders[m].weights_source = dict(s["source"])
    assign = bool(meta_parameters(model))  # adopt the file's tensors instead of copying them into meta ones
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as exc:  # checked above; a builder that depends on something else than its arguments
        raise CheckpointError(f"checkpoint {weights} does not fit the towers {sidecar.name} describes: "
                              f"{str(exc).splitlines()[0]}") from None
    if strict and (missing or unexpected):
        raise CheckpointError(f"checkpoint {path} does not match its encoders: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if assign and meta_parameters(model):
        raise CheckpointError(f"checkpoint {path} lacks tensors of its library towers: {meta_parameters(model)[:5]}")
    model.checkpoint_meta = meta
    return model.to(device).eval()


def _with_assets(path: str | Path, specs: Mapping[str, Any]) -> dict[str, Any]:
    """Specs whose bundled asset folders (``"assets"``, see :mod:`anybind.pretrained.assets`) are resolved."""
    from .pretrained.assets import MARKER, substitute

    weights = _paths(path)[0]
    out = {}
    for m, spec in specs.items():
        if spec.get("assets"):
            folder = (weights.parent / spec["assets"]).resolve()
            if not folder.is_relative_to(weights.parent.resolve()) or not folder.is_dir():
                raise CheckpointError(f"checkpoint {weights}: the {m} tower's files {spec['assets']!r} are missing "
                                      f"(they are saved beside the checkpoint; copy that folder with it)")
            spec = substitute(dict(spec), MARKER, str(folder))
        out[m] = spec
    return out
