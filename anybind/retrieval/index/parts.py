"""One modality's vectors as a searchable part: the faiss (or PyTorch) index, its row numbers, its settings.

:func:`build_memory_part` builds the in-memory kinds (``flat``, ``hnsw``, ``ivfpq``) from an array;
:mod:`.disk` builds ``ivfpq_disk`` from a stream of chunks. Both end in a :class:`Part`, whose ``search`` maps
the positions inside the part back to the index's global rows.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from . import backend
from .policy import KINDS, IndexParams, default_nlist, default_pq_m, estimate_memory
from .tuning import EF_SEARCH_VALUES, nprobe_values, split_for_tuning, tune_part

log = logging.getLogger(__name__)


class Part:
    """The vectors of one modality: a faiss index or an exact PyTorch matrix, plus their global row numbers.

    ``vectors`` (``ivfpq_disk`` only) reads the vectors on disk that re-rank the IVF-PQ shortlist.
    """

    def __init__(self, modality: str, kind: str, backend_name: str, rows: np.ndarray, impl: Any, d: int, settings: dict,
                 vectors=None):
        self.modality, self.kind, self.backend = modality, kind, backend_name
        self.rows = np.asarray(rows, dtype=np.int64)
        self.impl, self.d = impl, d
        self.settings = dict(settings)
        self.vectors = vectors
        self.timings: dict[str, float] = {}  # seconds per build stage (train, add, tune); not saved

    def __len__(self) -> int:
        return len(self.rows)

    def search_positions(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, positions inside the part)``; missing slots -inf / -1."""
        if self.backend == "torch":
            return backend.exact_topk(q, self.impl, k)
        # faiss parallelises over queries: for one query a second thread only adds a fork/join, which costs
        # milliseconds when the cores are busy (IndexRefine's re-ranking loop forks even for one query)
        with backend.faiss_threads(1 if len(q) == 1 else None):
            if self.vectors is None:
                return self.impl.search(q, k)
            shortlist = min(len(self), max(k, int(round(k * float(self.settings.get("k_factor", 8))))))
            _, cand = self.impl.search(q, shortlist)
        return self.vectors.rerank(q, cand, k)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, global rows)`` of the top ``k`` (at most the part's size)."""
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        s, i = self.search_positions(q, k)
        rows = np.where(i >= 0, self.rows[np.clip(i, 0, None)], -1)
        return np.asarray(s, dtype=np.float32), rows

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        if self.backend == "torch":
            self.impl = torch.cat([self.impl, torch.from_numpy(vectors)])
        elif self.vectors is not None:
            ids = np.arange(len(self), len(self) + len(vectors), dtype=np.int64)
            self.vectors.append(vectors)
            self.impl.add_with_ids(vectors, ids)
        else:
            self.impl.add(vectors)
        self.rows = np.concatenate([self.rows, rows.astype(np.int64)])

    def apply_settings(self) -> None:
        faiss = backend.import_faiss()
        if self.backend != "faiss":
            return
        if self.kind == "hnsw" and "ef_search" in self.settings:
            self.impl.hnsw.efSearch = int(self.settings["ef_search"])
        if self.kind in ("ivfpq", "ivfpq_disk"):
            if "nprobe" in self.settings:
                faiss.extract_index_ivf(self.impl).nprobe = int(self.settings["nprobe"])
            if self.settings.get("refine") and self.kind == "ivfpq":
                self.impl.k_factor = float(self.settings.get("k_factor", 8))

    def write(self, path: str) -> None:
        """Write the vectors / faiss index to ``path`` (streamed to disk: no second in-memory copy)."""
        if self.backend == "torch":
            save_npy(path, self.impl.numpy())
        else:
            backend.import_faiss().write_index(self.impl, path)

    def memory_bytes(self) -> int:
        refine = bool(self.settings.get("refine"))
        return estimate_memory(self.kind, len(self), self.d, IndexParams(
            hnsw_m=self.settings.get("m", 32), ivf_nlist=self.settings.get("nlist"), pq_m=self.settings.get("pq_m")), refine)


def save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array, allow_pickle=False)


def add_rows(impl, vectors: np.ndarray, positions: np.ndarray | None, chunk: int = 65536) -> None:
    """``impl.add(vectors[positions])`` in chunks, so a large selection is never copied whole."""
    if positions is None:
        impl.add(vectors)
        return
    for lo in range(0, len(positions), chunk):
        impl.add(np.ascontiguousarray(vectors[positions[lo:lo + chunk]]))


def pq_bits(n: int) -> int:
    """8-bit codes once there are enough vectors to train 256 centroids per sub-quantizer, fewer below."""
    return 8 if n >= 256 * 39 else max(4, min(8, int(math.log2(max(16, n // 39)))))


def build_memory_part(modality: str, vectors: np.ndarray, rows: np.ndarray, kind: str, refine: bool,
                      params: IndexParams) -> Part:
    """A part of an in-memory kind over ``vectors`` (unit float32), tuned unless its knob is fixed."""
    faiss = backend.import_faiss()
    n, d = vectors.shape
    if faiss is None:
        if kind not in ("flat",):
            raise ImportError(f"index kind {kind!r} needs faiss (pip install faiss-cpu); kind='flat' or 'auto' works without it")
        return Part(modality, "flat", "torch", rows, torch.from_numpy(vectors.copy()), d, {})
    if kind == "flat":
        impl = faiss.IndexFlatIP(d)
        impl.add(vectors)
        return Part(modality, "flat", "faiss", rows, impl, d, {})
    timings, t0 = {}, time.perf_counter()
    if kind == "hnsw":
        kept, held = split_for_tuning(n, params, params.ef_search is None and params.tune_vectors is None)
        impl = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        impl.hnsw.efConstruction = params.ef_construction
        add_rows(impl, vectors, kept if len(held) else None)
        timings["add"] = time.perf_counter() - t0
        settings = {"m": params.hnsw_m, "ef_construction": params.ef_construction}
        knob, values, fixed = "ef_search", EF_SEARCH_VALUES, params.ef_search
    elif kind == "ivfpq":
        nlist = params.ivf_nlist or default_nlist(n)
        nlist = max(1, min(nlist, n // 39 or 1))
        m = params.pq_m or default_pq_m(d, refine)
        if d % m:
            raise ValueError(f"pq_m={m} must divide the vector width {d}")
        nbits = pq_bits(n)
        kept, held = split_for_tuning(n, params, params.nprobe is None and params.tune_vectors is None)
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivf.pq.cp.niter = params.pq_train_iters
        rng = np.random.default_rng(params.seed)
        cap = max(64 * nlist, 40 * (1 << nbits))  # k-means cost grows with the sample: enough points per centroid
        ivf.train(vectors if n <= cap else vectors[np.sort(rng.choice(n, cap, replace=False))])
        timings["train"] = time.perf_counter() - t0
        impl = faiss.IndexRefineFlat(ivf) if refine else ivf
        add_rows(impl, vectors, kept if len(held) else None)
        timings["add"] = time.perf_counter() - t0 - timings["train"]
        settings = {"nlist": nlist, "pq_m": m, "nbits": nbits, "refine": bool(refine), "k_factor": params.k_factor}
        knob, values, fixed = "nprobe", nprobe_values(nlist), params.nprobe
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    part = Part(modality, kind, "faiss", rows[kept], impl, d, settings)
    t0 = time.perf_counter()
    queries = truth = None
    if fixed is None and (params.tune_vectors is not None or len(held)):
        # tuning queries: given ones, or stored vectors held out of the index while tuning (added afterwards) so
        # they behave like fresh queries from the collection's own distribution
        queries = (backend.normalize(backend.as_float32(params.tune_vectors)) if params.tune_vectors is not None
                   else vectors[held])
        k = min(params.tune_k, len(kept))
        _, truth = backend.exact_topk(queries, vectors, k, exclude=held if len(held) else None)
        if len(held):  # positions in `vectors` -> positions among the kept rows (the ids inside the faiss index)
            truth = np.where(truth >= 0, np.searchsorted(kept, truth), -1)
    tune_part(part, queries, truth, knob, values, fixed, params)
    timings["tune"] = time.perf_counter() - t0
    if len(held):
        part.add(np.ascontiguousarray(vectors[held]), rows[held])
    part.timings = {key: round(v, 2) for key, v in timings.items()}
    log.info("%s part %s of %d vectors: %s; seconds per stage %s", kind, modality, n, part.settings, part.timings)
    return part
