"""``anybind-eval`` (Hydra, ``conf/evaluate.yaml``): a manifest, or a benchmark with ``benchmark=<name>``.

``run_evaluate(cfg)`` takes a composed config so that tests and notebooks can call it without a command line.
A user error (no rows in the requested split, a benchmark copy without its layout, no model given) prints one
line, ``anybind-eval: <message>``, and exits with status 2; ``ANYBIND_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..retrieval.config import to_plain
from .errors import EvaluationError

log = logging.getLogger("anybind.eval")


def build_model(model_cfg: Mapping[str, Any], needed: Iterable[str] = ()):
    """A checkpoint (``anybind.load``), a random model from registry names, or ``encoders: default``: the default
    tiny tower of every modality in ``needed``, randomly initialised with ``seed`` (an untrained baseline)."""
    import torch

    import anybind

    checkpoint, encoders = model_cfg.get("checkpoint"), model_cfg.get("encoders")
    device = model_cfg.get("device") or "cpu"
    if checkpoint:
        return anybind.load(checkpoint, device=device)
    if not encoders:
        raise EvaluationError("give model.checkpoint=<path>, or model.encoders=default for an untrained baseline "
                              "(or model.encoders={modality: registry name})")
    torch.manual_seed(int(model_cfg.get("seed") or 0))
    if encoders == "default":
        mods = list(dict.fromkeys(needed))
        if not mods:
            raise EvaluationError("model.encoders=default: no modality to build a tower for")
        return anybind.create_model(mods).to(device).eval()
    if not isinstance(encoders, Mapping):
        raise EvaluationError(f"model.encoders must be 'default' or {{modality: registry name}}, got {encoders!r}")
    return anybind.create_model(dict(encoders)).to(device).eval()


def _manifest_modalities(path: str, wanted) -> list[str]:
    from ..data.manifest import load_manifest

    mods = load_manifest(path).modalities()
    return [m for m in mods if wanted is None or m in wanted] + ["text"]


def run_benchmark_cfg(c: dict, out: Path) -> dict:
    from .benchmarks import load_benchmark
    from .run import format_result, run_benchmark

    b = dict(c["benchmark"])
    name = b.pop("name")
    data = load_benchmark(name, b.pop("root", None), **b)
    model = build_model(c.get("model") or {}, [data.modality, "text"])
    result = run_benchmark(model, data, out, checkpoint=(c.get("model") or {}).get("checkpoint"),
                           batch_size=c.get("batch_size", 64), num_workers=c.get("num_workers", 0),
                           autocast=c.get("autocast", False), plots=c.get("heatmap", True),
                           progress=c.get("progress", False))
    print(format_result(result))
    return result


def run_evaluate(cfg, out_dir: str | Path | None = None) -> dict:
    """Evaluate per ``conf/evaluate.yaml``; writes metrics.json (and a figure) into the run directory."""
    from .manifest import evaluate_manifest
    from .report import format_metrics

    c = to_plain(cfg)
    out = Path(c.get("out_dir") or out_dir or "runs/eval")
    if c.get("benchmark"):
        if c.get("manifest"):
            raise EvaluationError("give either manifest=<file> or benchmark=<name>, not both")
        result = run_benchmark_cfg(c, out)
        print(f"wrote {out / 'metrics.json'}")
        return result
    if not c.get("manifest"):
        raise EvaluationError("give manifest=<file>, or benchmark=<name> benchmark.root=<path> "
                              "(names: esc50, modelnet40, msrvtt, clotho, audiocaps, folder, coco)")
    from .manifest import resolve_split

    resolve_split(c["manifest"], c.get("split"))  # no rows in the requested split: fail before building anything
    m = c.get("model") or {}
    needed = _manifest_modalities(c["manifest"], c.get("modalities")) if m.get("encoders") == "default" else ()
    model = build_model(m, needed)
    zs = c.get("zero_shot", "auto")
    metrics = evaluate_manifest(
        model, c["manifest"], out, split=c.get("split"), modalities=c.get("modalities"), match_key=c.get("match_key"),
        ks=tuple(c.get("ks") or (1, 5, 10)), trained_pairs=c.get("trained_pairs"),
        zero_shot_templates=c.get("templates"), zero_shot_mode=zs, dataset=c.get("dataset"),
        batch_size=c.get("batch_size", 64), num_workers=c.get("num_workers", 0), store_dir=c.get("store"),
        heatmap=c.get("heatmap", True), checkpoint=m.get("checkpoint"), progress=c.get("progress", True))
    print(format_metrics(metrics))
    ev = metrics["eval"]
    print(f"split: {ev['split'] if ev['split'] is not None else 'none (the manifest declares no split: every sample)'}; "
          f"zero-shot {ev['zero_shot']}")
    print(f"wrote {out / 'metrics.json'}")
    return metrics


def main() -> None:
    """The ``anybind-eval`` console script."""
    from ..retrieval.jobs import hydra_main

    hydra_main("evaluate", run_evaluate, prog="anybind-eval")
