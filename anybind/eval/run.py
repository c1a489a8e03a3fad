"""Score a model on a benchmark read by :mod:`anybind.eval.benchmarks` and write a result that says what it is.

``metrics.json`` holds the benchmark, split (or fold), the items found, missing, extra and failed (every one
listed), the sha256 of the sorted file list, the templates, the model's weights sha256 and config, library
versions, and the scores: ``zero_shot["<benchmark>/<modality>"]`` (top-1/top-5, chance, per-class accuracy and a
confusion matrix, drawn as ``confusion.png``) for classification, ``retrieval["text-><modality>"]`` and
``retrieval["<modality>->text"]`` (R@1/5/10, MdR, chance; R@K curves drawn as ``recall_at_k.png``) for retrieval.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .benchmarks.base import BenchmarkData
from .errors import EvaluationError
from .metrics import (chance_curve, chance_recall, confusion_matrix, first_hit_ranks, per_class_accuracy,
                      recall_curve, recall_from_ranks)
from .report import files_sha256, library_versions, model_provenance, write_metrics


def _embed(model, data: BenchmarkData, batch_size: int, num_workers: int, autocast: bool, progress: bool):
    from ..embedding import embed_items

    if data.modality not in model.modalities:
        raise EvaluationError(f"{data.name} needs a {data.modality} tower; the model has {', '.join(model.modalities)}")
    t0 = time.perf_counter()
    out = embed_items(model, data.modality, [it.source for it in data.items], batch_size=batch_size,
                      num_workers=num_workers, progress=progress, autocast=autocast, skip_errors=True)
    seconds = time.perf_counter() - t0
    failed = [{"id": data.items[i].id, "error": msg} for i, msg in out.errors]
    if not bool(out.ok.any()):
        raise EvaluationError(f"{data.name} at {data.root}: none of the {len(data.items)} {data.modality} items could be "
                              f"read (first: {failed[0]['error'] if failed else '-'})")
    return out.embeddings[out.ok], out.ok, failed, seconds


def _classification(model, data: BenchmarkData, emb, ok, ks: Sequence[int], batch_size: int) -> dict[str, Any]:
    from ..zero_shot import classifier, classify

    weights = classifier(model, data.prompt_names, data.templates, batch_size=max(batch_size, 64))
    labels = torch.tensor([it.label for it in data.items], dtype=torch.long)[ok]
    groups = [it.group for it, good in zip(data.items, ok.tolist()) if good]
    n_cls = len(data.classnames)
    top = classify(None, emb, weights, k=max(ks))
    hit = top.indices == labels[:, None]
    # hits / n in Python floats (a float32 mean turns 9 of 100 into 0.0900000036)
    scores: dict[str, Any] = {f"top{k}": int(hit[:, :k].any(1).sum()) / len(labels) if len(labels) else float("nan")
                              for k in ks}
    scores["n"] = int(len(labels))
    scores.update({f"chance_top{k}": min(k, n_cls) / n_cls for k in ks})
    cm = confusion_matrix(top.indices[:, 0], labels, n_cls)
    extra: dict[str, Any] = {"per_class": per_class_accuracy(cm, data.classnames), "confusion": cm.tolist()}
    if any(g is not None for g in groups):
        per_group = {}
        for g in sorted({g for g in groups if g is not None}):
            rows = torch.tensor([x == g for x in groups])
            per_group[g] = {"top1": int(hit[rows, 0].sum()) / int(rows.sum()), "n": int(rows.sum())}
        extra["per_group"] = per_group
    return {"zero_shot": {f"{data.name}/{data.modality}": scores}, **extra}


def _retrieval(model, data: BenchmarkData, emb, ok, ks: Sequence[int], batch_size: int, num_workers: int,
               autocast: bool) -> tuple[dict[str, Any], dict[str, list], dict[str, list]]:
    from .manifest import trained_pairs_from_meta

    media_keys = [it.id for it, good in zip(data.items, ok.tolist()) if good]
    scored = set(media_keys)
    caps = [(k, c) for k, c in data.captions if k in scored]
    if not caps:
        raise EvaluationError(f"{data.name}: no caption belongs to an item that was found and read")
    text = model.embed({"text": [c for _, c in caps]}, batch_size=max(batch_size, 64), num_workers=num_workers,
                       progress=False, autocast=autocast)["text"]
    cap_keys = [k for k, _ in caps]
    meta = getattr(model, "checkpoint_meta", None)
    pairs = None if meta is None else {frozenset(p) for p in trained_pairs_from_meta(meta)}
    m = data.modality
    out, curves, chance_curves = {}, {}, {}
    max_k = min(100, max(len(media_keys), len(cap_keys)))
    for name, (q, g, qk, gk) in {f"text->{m}": (text, emb, cap_keys, media_keys),
                                  f"{m}->text": (emb, text, media_keys, cap_keys)}.items():
        ranks = first_hit_ranks(q, g, qk, gk)
        row: dict[str, Any] = {**recall_from_ranks(ranks, ks), **chance_recall(qk, gk, ks)}
        row["emergent"] = None if pairs is None else frozenset(("text", m)) not in pairs
        out[name] = row
        k_here = min(max_k, len(gk))
        curves[name] = recall_curve(ranks, k_here)
        chance_curves[name] = chance_curve(qk, gk, k_here)
    return {"retrieval": out, "queries": {"captions": len(caps), m: len(media_keys)}}, curves, chance_curves


def run_benchmark(model, data: BenchmarkData, out_dir: str | Path | None = None, *, checkpoint: str | Path | None = None,
                  batch_size: int = 64, num_workers: int = 0, autocast: bool = False, ks: Sequence[int] | None = None,
                  plots: bool = True, progress: bool = False) -> dict[str, Any]:
    """Embed ``data``'s items, score them by its protocol, and (with ``out_dir``) write ``metrics.json`` and the
    figure; returns the result dict."""
    t0 = time.perf_counter()
    emb, ok, failed, embed_s = _embed(model, data, batch_size, num_workers, autocast, progress)
    result: dict[str, Any] = {
        "benchmark": data.name, "task": data.task, "modality": data.modality, "root": str(data.root.resolve()),
        "split": data.split, "protocol": data.protocol,
        "items": {**data.summary(), "failed": len(failed), "failed_items": failed, "scored": int(ok.sum())},
        "files_sha256": files_sha256(data.files), "files_count": len(data.files),
    }
    if data.task == "classification":
        result["templates"] = list(data.templates)
        result["classnames"] = dict(zip(data.classnames, data.prompt_names))
        result.update(_classification(model, data, emb, ok, ks or (1, 5), batch_size))
        curves = chance_curves = None
    else:
        scores, curves, chance_curves = _retrieval(model, data, emb, ok, ks or (1, 5, 10), batch_size, num_workers,
                                                   autocast)
        result.update(scores)
        result["recall_curves"] = curves
    result["model"] = model_provenance(model, checkpoint)
    result["versions"] = library_versions()
    result["notes"] = list(data.notes)
    total = time.perf_counter() - t0
    result["timing"] = {"embed_s": embed_s, "total_s": total,
                        "items_per_s": len(data.items) / embed_s if embed_s > 0 else None,
                        "num_workers": num_workers, "batch_size": batch_size, "threads": torch.get_num_threads()}
    result["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if out_dir is not None:
        out = Path(out_dir)
        result["figures"] = {}
        if plots:
            from .plots import plot_confusion_matrix, plot_recall_curves

            if data.task == "classification":
                zs = result["zero_shot"][f"{data.name}/{data.modality}"]
                plot_confusion_matrix(torch.tensor(result["confusion"]), data.prompt_names, out / "confusion.png",
                                      title=f"{data.name} {data.modality} zero-shot top-1 {zs['top1']:.3f} (n={zs['n']})")
                result["figures"]["confusion"] = "confusion.png"
            else:
                plot_recall_curves(curves, out / "recall_at_k.png", title=f"{data.name} retrieval",
                                   chance={k: v for k, v in chance_curves.items() if v})
                result["figures"]["recall_at_k"] = "recall_at_k.png"
        write_metrics(out, result)
    return result


def format_result(result: dict[str, Any]) -> str:
    """The lines ``anybind-eval benchmark=...`` prints."""
    it = result["items"]
    split = result["split"]
    lines = [f"{result['benchmark']} ({result['task']}, {result['modality']}), {split.get('name')}={split.get('value')}: "
             f"{it['found']} items found, {it['missing']} missing, {it['extra']} extra, {it['failed']} unreadable"
             + (f" (published: {it['published']})" if it.get("published") else "")]
    for name, z in result.get("zero_shot", {}).items():
        lines.append(f"zero-shot {name}: top1 {z['top1']:.4f} top5 {z.get('top5', float('nan')):.4f} n {z['n']} "
                     f"(chance {z['chance_top1']:.4f})")
    for g, v in result.get("per_group", {}).items():
        lines.append(f"  {g}: top1 {v['top1']:.4f} (n={v['n']})")
    for name, r in result.get("retrieval", {}).items():
        lines.append(f"{name}: R@1 {r['R@1']:.4f} R@5 {r['R@5']:.4f} R@10 {r['R@10']:.4f} MdR {r['MdR']:.0f} n {r['n']} "
                     f"(chance R@1 {r['chance_R@1']:.4f})")
    trained = "trained" if result["model"]["trained"] else "untrained"
    lines.append(f"files sha256 {result['files_sha256'][:16]}..., model weights sha256 "
                 f"{result['model']['weights_sha256'][:16]}... ({trained})")
    if it["missing"]:
        lines.append(f"missing (first of {it['missing']}): {', '.join(it['missing_items'][:3])}")
    return "\n".join(lines)
