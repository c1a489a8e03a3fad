"""Model checkpoints: an :class:`~anybind.model.AnyBindModel` saved as a weights pair with the sidecar that rebuilds it.

The pair is :mod:`anybind.io.tensorfile`'s (safetensors weights plus a JSON sidecar, switched atomically, read
without running code); for a model the sidecar holds::

    {"format": "anybind", "version": 1, "kind": "model", "embed_dim": D,
     "encoders": {modality: {"name", "kwargs", "input_contract"}}, "config": {...}, "sha256": "<hex of weights>"}

:func:`load` checks the sidecar before it allocates anything: the input contracts are bounded
(:data:`anybind.modality.CONTRACT_BOUNDS`), the towers are built on the meta device and their tensor shapes compared
with the file's header (no tensor read); a mismatch raises :class:`~anybind.errors.ShapeMismatchError` naming the
file, the tensor and both shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import AnybindError, CheckpointError, ShapeMismatchError
from .io import atomic_write_bytes, atomic_write_json, fsync_dir, sha256_file  # noqa: F401 - re-exported
from .io.tensorfile import (FORMAT, VERSION, load_tensors, pair_paths, read_sidecar, read_weights,  # noqa: F401
                            save_tensors, tensor_shapes)
from .pretrained.weights import deferred_weights, meta_parameters, params_on_meta

# Builder arguments a sidecar may give, bounded so that a hostile one cannot make even the meta-device build of the
# towers (modules, not tensors) take minutes: far above every released model.
ARCH_BOUNDS = {"depth": 1024, "num_layers": 1024, "layers": 1024, "num_heads": 1024, "heads": 1024, "width": 1 << 16,
               "embed_dim": 1 << 16, "mlp_ratio": 64, "patch_size": 4096, "kernel_size": 4096, "num_groups": 1 << 16,
               "group_size": 1 << 16}


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

            weights = pair_paths(path)[0]
            rel = f"{weights.stem}.assets/{m}"
            bundle(folder, weights.parent / rel)
            spec["assets"] = rel
            spec["kwargs"]["path"] = MARKER
            spec["input_contract"] = substitute(spec["input_contract"], str(folder), MARKER)
    save_tensors(path, model.state_dict(), meta)
    return pair_paths(path)[0]


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
    from .model import AnyBindModel, create_model

    towers = {}
    for m, s in specs.items():
        try:
            # shapes only on the meta device; for the real model every parameter is created on meta too (no random
            # initialisation to throw away) and adopts the checkpoint's tensor, so the weights exist once in memory
            # value ops (random init) on meta parameters are skipped in both builds; real buffers still compute
            with deferred_weights(), (torch.device("meta") if meta_device else params_on_meta()), _meta_build():
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


def load(path: str | Path, *, device: str | torch.device = "cpu", modalities: list[str] | None = None, strict: bool = True,
         mmap: bool = False):
    """Load a trained or converted anybind checkpoint. ``modalities`` loads only those towers.

    The sidecar is checked against the file's tensor shapes before any tower is allocated (module docstring).
    ``mmap=True`` maps the weights file copy-on-write instead of reading it: the towers' tensors are views of the
    page cache, shared between processes that load the same file, and loading costs only the sha256 pass. The views
    keep the file's byte offsets, so the last bits of an output can differ from a plain load (alignment-dependent
    kernels); training and exact resumes use the default.
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
    state = read_weights(weights, sidecar, meta, verify=True, device="cpu", mmap=mmap)
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

    weights = pair_paths(path)[0]
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
