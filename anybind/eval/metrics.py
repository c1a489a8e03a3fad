"""Metric maths on embeddings: retrieval ranks and R@K, zero-shot top-k, chance levels, per-class accuracy.

Retrieval: for every ordered pair of modalities ``q->g``, each ``q`` embedding queries all ``g`` embeddings by cosine
similarity; a *hit* is a gallery item with the same match key (the label when samples have one, else the sample
id). ``R@k`` is the fraction of queries (0..1) whose first hit ranks within the top ``k``; ``MdR`` the median rank of
the first hit. Ties are counted against the query (a collapsed model that maps everything to one point scores 0,
not 1). Queries with no hit anywhere in the gallery are left out; ``n`` counts the queries scored. ``emergent`` is
true for pairs that were never trained together, e.g. ``audio->text`` when only image-audio and image-text were,
and ``None`` when nothing is known about training (a model that was never trained).

Chance: ``chance_R@k`` is the expected R@k of a ranking drawn uniformly at random (exact, per query:
``1 - C(G - r, k) / C(G, k)`` for ``r`` hits among ``G`` gallery items); ``chance_top1`` is ``1 / classes``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Hashable, Iterable, Sequence

import torch
import torch.nn.functional as F


def _codes(*key_lists: Sequence[Hashable]) -> list[torch.Tensor]:
    table: dict[Hashable, int] = {}
    return [torch.tensor([table.setdefault(k, len(table)) for k in keys], dtype=torch.long) for keys in key_lists]


def first_hit_ranks(
    query: torch.Tensor, gallery: torch.Tensor, query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable],
    *, chunk: int = 1024,
) -> torch.Tensor:
    """1-based rank of the first gallery item sharing each query's key (ties count against); 0 = no such item."""
    if len(query_keys) != len(query) or len(gallery_keys) != len(gallery):
        raise ValueError(f"keys ({len(query_keys)}, {len(gallery_keys)}) do not match embeddings ({len(query)}, {len(gallery)})")
    qk, gk = _codes(query_keys, gallery_keys)
    q, g = F.normalize(query.float(), dim=-1), F.normalize(gallery.float(), dim=-1)
    ranks = torch.zeros(len(q), dtype=torch.long)
    for lo in range(0, len(q), chunk):
        sims = q[lo:lo + chunk] @ g.T
        rel = qk[lo:lo + chunk, None] == gk[None, :]
        best = sims.masked_fill(~rel, float("-inf")).amax(dim=1, keepdim=True)
        beaten = ((sims >= best) & ~rel).sum(dim=1)
        ranks[lo:lo + chunk] = torch.where(rel.any(dim=1), beaten + 1, torch.zeros_like(beaten))
    return ranks


def recall_from_ranks(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """``{"R@k": .., "MdR": .., "n": ..}`` from first-hit ranks (0 = no hit, left out)."""
    scored = ranks[ranks > 0]
    out: dict[str, float] = {}
    for k in ks:
        # hits / n in Python floats: a float32 mean makes 180 hits of 200 0.89999998, which fails a ">= 0.9" check
        out[f"R@{k}"] = int((scored <= k).sum()) / len(scored) if len(scored) else float("nan")
    out["MdR"] = float(scored.float().median()) if len(scored) else float("nan")
    out["n"] = int(len(scored))
    return out


def recall_curve(ranks: torch.Tensor, max_k: int) -> list[float]:
    """R@1 .. R@max_k of the scored queries (the curve a R@K plot draws)."""
    scored = ranks[ranks > 0]
    if not len(scored):
        return [float("nan")] * max_k
    counts = torch.bincount(scored.clamp(max=max_k + 1), minlength=max_k + 2)[1:max_k + 1].cumsum(0)
    return [int(c) / len(scored) for c in counts]


def chance_curve(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable], max_k: int) -> list[float]:
    """Chance R@1 .. R@max_k: the expected R@k of a uniformly random ranking, over the queries that have a hit.

    A query with ``r`` hits among ``G`` gallery items misses the top ``k`` with probability
    ``prod_{i<k} (G - r - i) / (G - i)``; queries are grouped by ``r``, so the cost is (distinct r) x max_k.
    """
    counts = Counter(gallery_keys)
    g = len(gallery_keys)
    by_r = Counter(counts[k] for k in query_keys if counts.get(k))
    n = sum(by_r.values())
    if not n or max_k < 1:
        return [float("nan")] * max(max_k, 0)
    span = min(max_k, g)
    i = torch.arange(span, dtype=torch.float64)
    hit = torch.zeros(span, dtype=torch.float64)
    for r, c in by_r.items():
        miss = ((g - r - i).clamp(min=0) / (g - i)).cumprod(0)
        hit += c * (1.0 - miss)
    curve = (hit / n).tolist()
    return curve + [1.0] * (max_k - span)


def chance_recall(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable],
                  ks: Iterable[int]) -> dict[str, float]:
    """``{"chance_R@k": ..}``: the expected R@k of a uniformly random ranking (see :func:`chance_curve`)."""
    ks = list(ks)
    curve = chance_curve(query_keys, gallery_keys, max(ks, default=0))
    return {f"chance_R@{k}": curve[k - 1] if curve else float("nan") for k in ks}


def retrieval_metrics(
    embeddings: dict[str, torch.Tensor],
    keys: dict[str, Sequence[Hashable]],
    trained_pairs: Iterable[frozenset] | None = (),
    ks: Sequence[int] = (1, 5, 10),
    *,
    chance: bool = False,
) -> dict[str, dict[str, Any]]:
    """``{"q->g": {"R@1", "R@5", "R@10", "MdR", "n", "emergent"}}`` for every ordered pair of modalities.

    ``trained_pairs=None`` (nothing known about training) gives ``"emergent": None``; ``chance`` adds the
    ``chance_R@k`` of each pair.
    """
    trained = None if trained_pairs is None else {frozenset(p) for p in trained_pairs}
    out = {}
    mods = list(embeddings)
    for q in mods:
        for g in mods:
            if q == g:
                continue
            ranks = first_hit_ranks(embeddings[q], embeddings[g], keys[q], keys[g])
            row: dict[str, Any] = recall_from_ranks(ranks, ks)
            if chance:
                row.update(chance_recall(keys[q], keys[g], ks))
            row["emergent"] = None if trained is None else frozenset((q, g)) not in trained
            out[f"{q}->{g}"] = row
    return out


def topk_predictions(query_emb: torch.Tensor, class_emb: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, indices)`` of the ``k`` most similar classes per query (cosine; ``k`` capped at the classes)."""
    q = F.normalize(query_emb.float(), dim=-1)
    c = F.normalize(class_emb.float(), dim=-1)
    sims = q @ c.T
    return sims.topk(min(k, c.shape[0]), dim=1)


def zero_shot_metrics(
    query_emb: torch.Tensor,
    class_text_emb: torch.Tensor,
    query_labels: Sequence[Hashable],
    class_names: Sequence[Hashable],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float | int]:
    """Classify each query by its most similar class embedding: ``{"top1", "top5", "n"}`` (fractions 0..1).

    Queries whose label is not among ``class_names`` are left out of ``n``. With fewer than 5 classes top5 is
    top-(number of classes).
    """
    if len(class_text_emb) != len(class_names):
        raise ValueError(f"{len(class_text_emb)} class embeddings for {len(class_names)} class names")
    index = {c: i for i, c in enumerate(class_names)}
    keep = [i for i, lab in enumerate(query_labels) if lab in index]
    out: dict[str, float | int] = {}
    if not keep or not len(class_names):
        return {**{f"top{k}": float("nan") for k in ks}, "n": 0}
    target = torch.tensor([index[query_labels[i]] for i in keep])
    _, order = topk_predictions(query_emb[keep], class_text_emb, max(ks))
    for k in ks:
        out[f"top{k}"] = int((order[:, :k] == target[:, None]).any(dim=1).sum()) / len(keep)
    out["n"] = len(keep)
    return out


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class."""
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long)
    cm.index_add_(0, target.long() * num_classes + pred.long(), torch.ones_like(target, dtype=torch.long))
    return cm.view(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor, class_names: Sequence[str]) -> dict[str, float | None]:
    """Top-1 accuracy of each class from a confusion matrix; ``None`` for a class with no items."""
    out = {}
    for i, name in enumerate(class_names):
        n = int(cm[i].sum())
        out[str(name)] = int(cm[i, i]) / n if n else None
    return out


def is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
