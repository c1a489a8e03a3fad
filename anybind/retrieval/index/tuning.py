"""Build-time tuning of an approximate part: the cheapest search setting that reaches the target recall.

Queries are either given (``IndexParams.tune_vectors``, e.g. another modality's embeddings) or stored vectors held
out of the first build so they behave like fresh queries from the collection's own distribution; their exact
top-k (``truth``, as positions inside the part) is compared with what the part returns at each setting.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .policy import IndexParams

log = logging.getLogger(__name__)

EF_SEARCH_VALUES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
NPROBE_VALUES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)


def goal(params: IndexParams) -> float:
    return min(1.0, params.target_recall + params.tune_margin)


def nprobe_values(nlist: int) -> list[int]:
    return [p for p in NPROBE_VALUES if p <= nlist] or [1]


def recall_at(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` found in the same row of ``got``."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist())]))


def measure(part, queries: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k of ``part`` (current settings) on ``queries`` whose exact top-k positions are ``truth``."""
    part.apply_settings()
    _, got = part.search_positions(queries, truth.shape[1])
    return recall_at(got, truth)


def tune_knob(part, queries: np.ndarray, truth: np.ndarray, knob: str, values: Sequence[int], params: IndexParams) -> float:
    """Set ``knob`` to the smallest of ``values`` whose recall reaches the goal (else the largest)."""
    chosen, recall = values[-1], 0.0
    for v in values:
        part.settings[knob] = v
        recall = measure(part, queries, truth)
        if recall >= goal(params):
            chosen = v
            break
    part.settings[knob] = chosen
    part.settings["tuned_recall"] = round(recall, 4)
    part.apply_settings()
    return recall


def tune_refine_depth(part, queries: np.ndarray, truth: np.ndarray, values: Sequence[int], params: IndexParams,
                      most: int | None = None, factors: Sequence[float] = (1, 2, 4, 8)) -> None:
    """IVF-PQ + re-ranking: the shortlist depth ``k_factor`` first, at a generous ``nprobe`` (nlist / 8, at most
    ``most``, so missed lists do not hide a shortlist that is too short): the smallest of k_factor x ``factors``
    reaching the target."""
    generous = part.settings["nlist"] // 8 if most is None else min(most, part.settings["nlist"] // 8)
    generous = [v for v in values if v <= max(values[0], generous)][-1]
    part.settings["nprobe"] = generous
    for f in factors:
        part.settings["k_factor"] = int(round(params.k_factor * f))
        if measure(part, queries, truth) >= goal(params):
            break


def split_for_tuning(n: int, params: IndexParams, needed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` positions: a sample held out of the first build to tune on (none if not needed)."""
    everything = np.arange(n)
    if not needed or n < 4 * params.tune_queries // 2 or n < 50:
        return everything, everything[:0]
    held = np.sort(np.random.default_rng(params.seed).choice(n, size=min(params.tune_queries, n // 4), replace=False))
    return np.setdiff1d(everything, held, assume_unique=True), held


def tune_part(part, queries: np.ndarray | None, truth: np.ndarray | None, knob: str, values: Sequence[int],
              fixed: int | None, params: IndexParams) -> None:
    """Apply a fixed setting, tune ``knob`` on ``queries`` (with re-ranking depth first for refined IVF-PQ), or,
    with nothing to tune on, search generously."""
    if fixed is not None:
        part.settings[knob] = fixed
        part.apply_settings()
        return
    if queries is None or truth is None:  # too small to hold anything out
        part.settings[knob] = values[min(len(values) - 1, 6)]
        part.apply_settings()
        return
    if part.kind == "ivfpq" and part.settings.get("refine"):
        tune_refine_depth(part, queries, truth, values, params)
    elif part.kind == "ivfpq_disk":  # thousands of lists at millions of vectors: nlist / 8 would scan for minutes;
        # every shortlisted row is a read from disk, so the depth is tuned in finer steps
        tune_refine_depth(part, queries, truth, values, params, most=64, factors=(1, 1.5, 2, 3, 4, 5, 6, 8))
    recall = tune_knob(part, queries, truth, knob, values, params)
    if recall < params.target_recall:
        log.warning("%s index of %d vectors (modality %s) reaches recall@%d %.2f at most (target %.2f); the data may be "
                    "near-uniform, where exact search (kind='flat') is the honest choice", part.kind, len(part),
                    part.modality, params.tune_k, recall, params.target_recall)
