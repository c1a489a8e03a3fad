"""Evaluate a model on a manifest: the any-to-any retrieval matrix and zero-shot classification by prompts.

The manifest is embedded into a store (``<out_dir>/embeddings``; resumable, bad files listed), then the
metric maths of :mod:`anybind.evaluate` runs on the stored vectors: for every ordered pair of modalities present,
R@1/5/10 and the median rank of the first match (samples match by label when they have one, else by id);
for every non-text modality with labels, top-1/top-5 of classifying by the text embeddings of the labels
(prompt templates averaged). ``metrics.json`` (ARCHITECTURE contract 3) and a heatmap PNG are written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .embed import embed_to_store
from .store import EmbeddingStore

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("{}", "a {}", "a photo of a {}", "the sound of a {}", "a video of a {}", "a 3d model of a {}")


def row_key(row: Mapping[str, Any], match_key: str | None = None) -> Hashable:
    """The match key of a stored row: the label when present (else the id), or ``id``/``label``/an extra key."""
    if match_key in (None, "auto"):
        return row["label"] if row.get("label") is not None else row["id"]
    if match_key in ("id", "label"):
        if row.get(match_key) is None:
            raise KeyError(f"row {row.get('id')!r} ({row.get('modality')}) has no {match_key!r} to match on")
        return row[match_key]
    extra = row.get("extra") or {}
    if match_key not in extra:
        raise KeyError(f"row {row.get('id')!r} has no key {match_key!r} to match on (has {sorted(extra)})")
    return str(extra[match_key])


def trained_pairs_from_meta(meta: Mapping[str, Any] | None) -> list[frozenset]:
    """Pairs of modalities a checkpoint was trained on, from its sidecar (``trained_pairs`` or the train config).

    A config without explicit ``pairs`` trained its ``anchor`` with every other modality.
    """
    meta = meta or {}
    if meta.get("trained_pairs"):
        return [frozenset(p) for p in meta["trained_pairs"]]
    cfg = meta.get("config") or {}
    pairs = cfg.get("pairs") or []
    if pairs:
        return [frozenset(p["modalities"] if isinstance(p, Mapping) else p) for p in pairs]
    anchor = cfg.get("anchor")
    mods = list(cfg.get("modality") or meta.get("encoders") or [])
    if anchor and anchor in mods:
        return [frozenset((anchor, m)) for m in mods if m != anchor]
    return []


def store_embeddings(store: EmbeddingStore, match_key: str | None = None,
                     modalities: Iterable[str] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, list], dict[str, list]]:
    """``(embeddings, keys, labels)`` per modality from a store (labels ``None`` where a row has none)."""
    embeddings, keys, labels = {}, {}, {}
    wanted = None if modalities is None else set(modalities)
    for m in store.modality_counts():
        if wanted is not None and m not in wanted:
            continue
        rows = store.metadata([m])
        embeddings[m] = torch.from_numpy(store.vectors([m]))
        keys[m] = [row_key(r, match_key) for r in rows]
        labels[m] = [r.get("label") for r in rows]
    return embeddings, keys, labels


@torch.no_grad()
def class_embeddings(model, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """One unit vector per class: the mean of its prompts' text embeddings, renormalized."""
    prompts = [t.format(c) for c in class_names for t in templates]
    z = model.embed({"text": prompts}, progress=False)["text"].view(len(class_names), len(templates), -1)
    return torch.nn.functional.normalize(z.mean(1), dim=-1)


def zero_shot(model, labels: Mapping[str, list], embeddings: Mapping[str, torch.Tensor], dataset: str,
              templates: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_TEMPLATES, ks: Sequence[int] = (1, 5)) -> dict:
    """``{"<dataset>/<modality>": {"top1", "top5", "n"}}`` for every non-text modality with labels."""
    from ..evaluate import zero_shot_metrics

    if "text" not in model.modalities:
        return {}
    names = sorted({str(lab) for m, labs in labels.items() if m != "text" for lab in labs if lab is not None})
    if not names:
        return {}
    out = {}
    for m, emb in embeddings.items():
        if m == "text" or all(lab is None for lab in labels[m]):
            continue
        tmpl = templates.get(m, DEFAULT_TEMPLATES) if isinstance(templates, Mapping) else templates
        classes = class_embeddings(model, names, list(tmpl))
        out[f"{dataset}/{m}"] = zero_shot_metrics(emb, classes, [None if lab is None else str(lab) for lab in labels[m]],
                                                  names, ks)
    return out


def evaluate_manifest(
    model,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    modalities: Iterable[str] | None = None,
    match_key: str | None = None,
    ks: Sequence[int] = (1, 5, 10),
    trained_pairs: Iterable[Iterable[str]] | None = None,
    zero_shot_templates: Sequence[str] | Mapping[str, Sequence[str]] | None = DEFAULT_TEMPLATES,
    dataset: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    store_dir: str | Path | None = None,
    heatmap: bool = True,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Embed ``manifest`` into a store and write ``metrics.json`` (+ ``retrieval_heatmap.png``) in ``out_dir``.

    ``trained_pairs`` defaults to what the checkpoint's sidecar says (pairs absent from it are ``emergent``);
    ``zero_shot_templates=None`` skips zero-shot. Returns the metrics dict.
    """
    from ..evaluate import plot_retrieval_heatmap, retrieval_metrics, write_metrics

    out_dir = Path(out_dir)
    store_dir = Path(store_dir) if store_dir is not None else out_dir / "embeddings"
    summary = embed_to_store(model, manifest, store_dir, split=split, modalities=modalities, batch_size=batch_size,
                             num_workers=num_workers, progress=progress, checkpoint=checkpoint)
    embeddings, keys, labels = store_embeddings(summary.store, match_key, modalities)
    pairs = trained_pairs_from_meta(getattr(model, "checkpoint_meta", None)) if trained_pairs is None else \
        [frozenset(p) for p in trained_pairs]
    metrics: dict[str, Any] = {"retrieval": retrieval_metrics(embeddings, keys, pairs, ks)}
    dataset = dataset or Path(manifest).stem
    if zero_shot_templates:
        metrics["zero_shot"] = zero_shot(model, labels, embeddings, dataset, zero_shot_templates)
    metrics["eval"] = {"manifest": str(Path(manifest).resolve()), "split": split, "match_key": match_key or "auto",
                       "counts": summary.store.modality_counts(), "failed_inputs": len(summary.store.errors),
                       "trained_pairs": sorted("-".join(sorted(p)) for p in pairs), "store": str(store_dir)}
    write_metrics(out_dir, metrics)
    if heatmap and metrics["retrieval"]:
        plot_retrieval_heatmap(metrics, out_dir / "retrieval_heatmap.png")
    return metrics


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A plain-text table of the retrieval matrix and zero-shot results."""
    lines = [f"{'pair':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MdR':>7}{'n':>7}  emergent"]
    fmt = lambda v: "   -" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"  # noqa: E731
    for pair, r in metrics.get("retrieval", {}).items():
        mdr = r.get("MdR")
        mdr_s = "-" if mdr is None or (isinstance(mdr, float) and np.isnan(mdr)) else f"{mdr:.0f}"
        lines.append(f"{pair:<22}{fmt(r.get('R@1')):>7}{fmt(r.get('R@5')):>7}{fmt(r.get('R@10')):>7}{mdr_s:>7}"
                     f"{r.get('n', 0):>7}  {'yes' if r.get('emergent') else 'no'}")
    for name, z in metrics.get("zero_shot", {}).items():
        lines.append(f"zero-shot {name}: top1 {fmt(z.get('top1'))} top5 {fmt(z.get('top5'))} n {z.get('n')}")
    return "\n".join(lines)
