"""What an evaluation writes: strict-JSON ``metrics.json``, the text tables it prints, and its provenance
(the model's weights sha256 and config, library versions, a checksum of the evaluated file list)."""

from __future__ import annotations

import hashlib
import math
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..io import atomic_write_json

VERSIONED = ("anybind", "torch", "torchaudio", "torchvision", "numpy", "open_clip_torch", "timm", "librosa",
             "soundfile", "av", "pillow", "h5py", "transformers", "faiss-cpu")


def clean_json(x: Any) -> Any:
    """NaN/inf become null, tuples lists, keys strings: what strict JSON can hold."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_metrics(run_dir: str | Path, metrics: Mapping[str, Any], name: str = "metrics.json") -> Path:
    """Write ``metrics`` to ``run_dir/metrics.json`` atomically (NaN becomes null, so the file is strict JSON)."""
    path = Path(run_dir) / name
    atomic_write_json(path, clean_json(dict(metrics)))
    return path


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries an evaluation's numbers depend on (``None``: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    if out.get("anybind") is None:
        import anybind

        out["anybind"] = anybind.__version__
    return out


def files_sha256(relative_paths: Iterable[str]) -> str:
    """sha256 of the sorted file list (one relative POSIX path per line): two copies of a benchmark with the same
    files give the same digest, whatever their root or listing order."""
    text = "\n".join(sorted(str(p) for p in relative_paths))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_dict_sha256(model) -> str:
    """sha256 over the model's tensors (names, dtypes, shapes, bytes in name order): the weights of a model that
    was not loaded from a file."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_provenance(model, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """How a result records its model: checkpoint path, weights sha256, training config, towers, trained pairs.

    A loaded checkpoint gives the sha256 of its safetensors file (from its sidecar, verified on load); a model
    built in memory (``trained: false``) the sha256 of its tensors.
    """
    meta = getattr(model, "checkpoint_meta", None)
    spec = model.encoder_spec()
    out: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "trained": meta is not None,
        "embed_dim": model.embed_dim,
        "encoders": {m: {"name": s["name"], "kwargs": s["kwargs"]} for m, s in spec.items()},
    }
    if meta is not None and meta.get("sha256"):
        out["weights_sha256"], out["weights_sha256_of"] = meta["sha256"], "safetensors file"
    else:
        out["weights_sha256"], out["weights_sha256_of"] = state_dict_sha256(model), "state dict tensors"
    out["config"] = (meta or {}).get("config")
    if meta is not None and meta.get("trained_pairs") is not None:
        out["trained_pairs"] = meta["trained_pairs"]
    return out


def _fmt(v: Any) -> str:
    return "   -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A plain-text table of the retrieval matrix (with the chance R@1 of each pair) and zero-shot results."""
    lines = [f"{'pair':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MdR':>7}{'n':>7}{'chance':>8}  emergent"]
    for pair, r in metrics.get("retrieval", {}).items():
        mdr = r.get("MdR")
        mdr_s = "-" if mdr is None or (isinstance(mdr, float) and math.isnan(mdr)) else f"{mdr:.0f}"
        em = r.get("emergent")
        em_s = "-" if em is None else ("yes" if em else "no")
        lines.append(f"{pair:<22}{_fmt(r.get('R@1')):>7}{_fmt(r.get('R@5')):>7}{_fmt(r.get('R@10')):>7}{mdr_s:>7}"
                     f"{r.get('n', 0):>7}{_fmt(r.get('chance_R@1')):>8}  {em_s}")
    for name, z in metrics.get("zero_shot", {}).items():
        chance = f" (chance {_fmt(z['chance_top1'])})" if "chance_top1" in z else ""
        lines.append(f"zero-shot {name}: top1 {_fmt(z.get('top1'))} top5 {_fmt(z.get('top5'))} n {z.get('n')}{chance}")
    return "\n".join(lines)
