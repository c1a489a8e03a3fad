"""Evaluate a model on a manifest: the any-to-any retrieval matrix and zero-shot classification by prompts.

The manifest is embedded into a store (``<out_dir>/embeddings``; resumable, bad files listed), then the metric
maths of :mod:`anybind.eval.metrics` runs on the stored vectors: for every ordered pair of modalities present,
R@1/5/10, the median rank of the first match and the chance level of each (samples match by label when they have
one, else by id); for every non-text modality with labels that look like class names, top-1/top-5 of classifying
by the text embeddings of the labels (prompt templates averaged). ``metrics.json`` (ARCHITECTURE contract 3) and a
heatmap PNG are written.

Split: ``split="test"`` keeps the rows whose ``split`` is ``test``; a manifest without any ``split`` column is
evaluated whole and records ``"split": null``; a manifest with splits but no row of the requested one is an
:class:`~anybind.eval.errors.EvaluationError` naming the splits it has.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import torch

from .errors import EvaluationError
from .metrics import retrieval_metrics, zero_shot_metrics

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


def resolve_split(manifest, split: str | None):
    """``(rows of split, split used)``: all rows and ``None`` when the manifest declares no split at all; an
    :class:`EvaluationError` when it declares splits but none is ``split``."""
    from ..data.manifest import Manifest, load_manifest

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if split is None:
        return manifest, None
    if not manifest.has_splits():
        log.info("%s declares no split: evaluating all %d samples", manifest.path, len(manifest))
        return manifest, None
    chosen = manifest.select(split)
    if not len(chosen):
        have = Counter(s.split for s in manifest.samples)
        listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(have.items(), key=lambda kv: str(kv[0])))
        raise EvaluationError(f"{manifest.path}: no sample has split={split!r}; its splits are {listed} "
                              f"(pick one with split=<name>, or split=null for every sample)")
    return chosen, split


def labels_look_like_classes(labels: Sequence[str | None]) -> tuple[bool, str]:
    """Whether labels are class names worth prompting (``(True, "")``), else ``(False, why not)``.

    Class names repeat (several samples per class), hold a letter, and are short (at most 6 words, 64 characters);
    a label unique to every sample is an id, and numbers are not names a text tower reads well.
    """
    labs = [lab for lab in labels if lab is not None]
    if not labs:
        return False, "no sample has a label"
    if len(labs) < len(labels):
        return False, f"{len(labels) - len(labs)} of {len(labels)} samples have no label"
    distinct = set(labs)
    if len(distinct) < 2:
        return False, f"every sample has the same label {labs[0]!r}"
    if len(distinct) == len(labs):
        return False, "every label is unique (ids, not classes)"
    for lab in sorted(distinct):
        if not re.search(r"[^\W\d_]", lab) or len(lab) > 64 or len(lab.split()) > 6:
            return False, f"label {lab!r} does not look like a class name"
    return True, ""


def store_embeddings(store, match_key: str | None = None, modalities: Iterable[str] | None = None,
                     ) -> tuple[dict[str, torch.Tensor], dict[str, list], dict[str, list]]:
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
    from ..zero_shot import classifier

    return classifier(model, class_names, templates)


def zero_shot(model, labels: Mapping[str, list], embeddings: Mapping[str, torch.Tensor], dataset: str,
              templates: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_TEMPLATES,
              ks: Sequence[int] = (1, 5)) -> dict:
    """``{"<dataset>/<modality>": {"top1", "top5", "n", "chance_top1", "chance_top5"}}`` per non-text modality
    with labels."""
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
        z = zero_shot_metrics(emb, classes, [None if lab is None else str(lab) for lab in labels[m]], names, ks)
        out[f"{dataset}/{m}"] = {**z, **{f"chance_top{k}": min(k, len(names)) / len(names) for k in ks}}
    return out


def _zero_shot_decision(model, labels: Mapping[str, list], asked: Any) -> tuple[bool, str]:
    if asked in (False, "false", "False", None, "none"):
        return False, "not asked (zero_shot=false)"
    if "text" not in model.modalities:
        return False, "the model has no text tower"
    media = [lab for m, labs in labels.items() if m != "text" for lab in labs]
    if asked in (True, "true", "True"):
        return (True, "asked") if any(lab is not None for lab in media) else (False, "no sample has a label")
    if asked != "auto":
        raise EvaluationError(f"zero_shot must be auto, true or false, got {asked!r}")
    ok, why = labels_look_like_classes(media)
    return ok, ("labels look like class names" if ok else why)


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
    zero_shot_mode: Any = True,
    dataset: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    store_dir: str | Path | None = None,
    heatmap: bool = True,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Embed ``manifest`` into a store and write ``metrics.json`` (+ ``retrieval_heatmap.png``) in ``out_dir``.

    ``trained_pairs`` defaults to what the checkpoint's sidecar says (pairs absent from it are ``emergent``); a
    model that was never trained (no checkpoint) has no emergent flags (``None``). ``zero_shot_templates=None``
    skips zero-shot; ``zero_shot_mode="auto"`` runs it only when the labels look like class names
    (:func:`labels_look_like_classes`), ``True`` whenever there are labels. Returns the metrics dict.
    """
    from ..retrieval.embed import embed_to_store
    from .plots import plot_retrieval_heatmap
    from .report import write_metrics

    out_dir = Path(out_dir)
    _, split_used = resolve_split(manifest, split)
    store_dir = Path(store_dir) if store_dir is not None else out_dir / "embeddings"
    summary = embed_to_store(model, manifest, store_dir, split=split_used, modalities=modalities, batch_size=batch_size,
                             num_workers=num_workers, progress=progress, checkpoint=checkpoint)
    embeddings, keys, labels = store_embeddings(summary.store, match_key, modalities)
    if not embeddings:
        raise EvaluationError(f"{manifest}: nothing was embedded (model towers {', '.join(model.modalities)}; "
                              f"{len(summary.store.errors)} inputs failed)")
    meta = getattr(model, "checkpoint_meta", None)
    if trained_pairs is not None:
        pairs: list[frozenset] | None = [frozenset(p) for p in trained_pairs]
    else:
        pairs = None if meta is None else trained_pairs_from_meta(meta)
    metrics: dict[str, Any] = {"retrieval": retrieval_metrics(embeddings, keys, pairs, ks, chance=True)}
    dataset = dataset or Path(manifest).stem
    if zero_shot_templates:
        run_zs, why = _zero_shot_decision(model, labels, zero_shot_mode)
    else:
        run_zs, why = False, "no templates"
    if run_zs:
        metrics["zero_shot"] = zero_shot(model, labels, embeddings, dataset, zero_shot_templates)
    metrics["eval"] = {"manifest": str(Path(manifest).resolve()), "split": split_used, "split_requested": split,
                       "match_key": match_key or "auto", "counts": summary.store.modality_counts(),
                       "failed_inputs": len(summary.store.errors), "trained": meta is not None,
                       "trained_pairs": None if pairs is None else sorted("-".join(sorted(p)) for p in pairs),
                       "zero_shot": ("ran: " if run_zs else "skipped: ") + why, "store": str(store_dir)}
    write_metrics(out_dir, metrics)
    if heatmap and metrics["retrieval"]:
        plot_retrieval_heatmap(metrics, out_dir / "retrieval_heatmap.png")
    return metrics


def evaluate_model(
    model,
    manifest,
    *,
    modalities: Sequence[str] | None = None,
    trained_pairs: Iterable[frozenset] = (),
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    match_key: str | None = None,
    zero_shot: bool = True,
    prompt: str = "{}",
    dataset_name: str = "data",
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Embed a manifest in memory and score it (the trainer's periodic evaluation):
    ``{"retrieval": ..., "zero_shot": ..., "eval_samples": n, "eval_errors": [...]}``.

    Zero-shot runs when the model has a text tower and every evaluated sample has a label: each other modality is
    classified among the labels' prompts (``prompt.format(label)``), reported as ``"<dataset_name>/<modality>"``.
    """
    from ..data.manifest import Manifest, load_manifest
    from .embedding import embed_manifest

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    manifest = manifest.select(split, limit=limit)
    errors: list = []
    emb, ids = embed_manifest(model, manifest, modalities, batch_size, num_workers, match_key="id", errors=errors)
    by_id = {s.id: s for s in manifest}
    keys = {m: [by_id[i].key(match_key) for i in rows] for m, rows in ids.items()}
    out: dict[str, Any] = {"retrieval": retrieval_metrics(emb, keys, trained_pairs, ks), "zero_shot": {}}
    labels = sorted({s.label for s in manifest if s.label is not None})
    if zero_shot and "text" in getattr(model, "modalities", []) and labels and all(s.label is not None for s in manifest):
        class_emb = model.embed({"text": [prompt.format(c) for c in labels]}, batch_size=batch_size)["text"]
        for m, rows in ids.items():
            if m != "text":
                out["zero_shot"][f"{dataset_name}/{m}"] = zero_shot_metrics(
                    emb[m], class_emb, [by_id[i].label for i in rows], labels)
    out["eval_samples"] = len(manifest)
    out["eval_errors"] = [{"id": sid, "modality": m, "error": msg} for sid, m, msg in errors[:20]]
    return out
