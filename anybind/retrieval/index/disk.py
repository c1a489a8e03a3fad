"""``ivfpq_disk``: IVF-PQ codes in memory, exact re-ranking from vectors on disk, built in one streamed pass.

The collection is read a chunk at a time (from a store's shard files, or from an array), so a build never holds
more than one chunk of float32 vectors, the quantizers' training sample and the codes:

1. train the coarse quantizer (``nlist`` lists) and the product quantizer on a random sample of rows;
2. one pass over the chunks: encode each into the IVF-PQ index, append it to the re-ranking file (float16 by
   default) and merge it into the exact top-k of the tuning queries (stored rows held out of the index until
   tuning is done, or ``IndexParams.tune_vectors``), so the ground truth costs no second pass over the data;
3. tune the shortlist depth ``k_factor`` and then ``nprobe`` to the target recall, add the held-out rows.

A search takes the ``k * k_factor`` best codes of the ``nprobe`` nearest lists and re-ranks them exactly with
their vectors read from the file (:class:`~.vectorfile.DiskVectors`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Iterator, Sequence

import numpy as np

from . import backend
from .vectorfile import DiskVectors, RowFile, SegmentWriter
from .parts import Part
from ...errors import CheckpointError
from .policy import IndexParams, default_disk_pq_m, default_nlist
from .tuning import nprobe_values, split_for_tuning, tune_part

log = logging.getLogger(__name__)


def _unit(block: np.ndarray) -> np.ndarray:
    """``block``'s rows at unit length, scaled in place when ``block`` is a writable float32 array."""
    if block.dtype != np.float32 or not block.flags.writeable or not block.flags.c_contiguous:
        return backend.normalize(backend.as_float32(block))
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    if not np.all(np.abs(norms - 1) < 1e-4):
        np.divide(block, np.maximum(norms, 1e-12), out=block)
    return block


class ArraySource:
    """Rows of an array already in memory (or memory-mapped), optionally only those at ``positions``."""

    def __init__(self, vectors: np.ndarray, positions: np.ndarray | None = None):
        self.vectors, self.positions = vectors, positions
        self.n = len(vectors) if positions is None else len(positions)
        self.d = int(vectors.shape[1])

    def take(self, positions: np.ndarray) -> np.ndarray:
        at = positions if self.positions is None else self.positions[positions]
        return backend.normalize(backend.as_float32(self.vectors[at]))

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        for lo in range(0, self.n, size):
            at = slice(lo, lo + size) if self.positions is None else self.positions[lo:lo + size]
            yield backend.normalize(backend.as_float32(self.vectors[at]))


class ShardSource:
    """One modality's rows across store shards (in order), read from their ``.npy`` files with positioned reads."""

    def __init__(self, shards: Sequence, d: int):
        self.shards, self.d = list(shards), d
        self.ends = np.cumsum([s.count for s in self.shards], dtype=np.int64)
        self.n = int(self.ends[-1]) if len(self.ends) else 0

    def _file(self, i: int) -> RowFile:
        f = RowFile(self.shards[i].vectors_path)
        if f.shape != (self.shards[i].count, self.d):
            raise CheckpointError(f"store shard file {f.path} holds {f.shape} vectors, its marker says "
                                  f"({self.shards[i].count}, {self.d})")
        return f

    def take(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.d), np.float32)
        which = np.searchsorted(self.ends, positions, side="right")
        for s in np.unique(which):
            sel = which == s
            out[sel] = self._file(int(s)).gather(positions[sel] - (self.ends[s - 1] if s else 0))
        return _unit(out)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Blocks of ``size`` rows (the last one shorter; small shards are joined, large ones cut), float32 unit rows."""
        pending, held = [], 0
        for i in range(len(self.shards)):
            f = self._file(i)
            lo = 0
            while lo < len(f):
                piece = f.block(lo, lo + size - held).astype(np.float32, copy=False)
                pending.append(piece)
                held += len(piece)
                lo += len(piece)
                if held == size:
                    yield _unit(np.concatenate(pending) if len(pending) > 1 else pending[0])
                    pending, held = [], 0
        if pending:
            yield _unit(np.concatenate(pending))


def build_disk_part(modality: str, source, rows: np.ndarray, params: IndexParams) -> Part:
    """An ``ivfpq_disk`` part over ``source`` (an :class:`ArraySource` or :class:`ShardSource`)."""
    faiss = backend.import_faiss()
    if faiss is None:
        raise ImportError("index kind 'ivfpq_disk' needs faiss (pip install faiss-cpu); kind='flat' or 'auto' works without it")
    n, d = source.n, source.d
    if n == 0:
        raise ValueError(f"modality {modality}: an ivfpq_disk part needs at least one vector")
    nlist = max(1, min(params.ivf_nlist or default_nlist(n), n // 39 or 1))
    m = params.pq_m or default_disk_pq_m(d)
    if d % m:
        raise ValueError(f"pq_m={m} must divide the vector width {d}")
    rng = np.random.default_rng(params.seed)
    timings, t0 = {}, time.perf_counter()

    # the coarse k-means is one large product (every thread helps); the product quantizer is d/2 tiny k-means,
    # which run fastest on one thread (on a busy machine a second one mostly waits at barriers: 4x slower)
    cap = params.train_max or max(40 * nlist, 1024)  # faiss asks for 39 points per centroid
    sample = source.take(np.sort(rng.choice(n, cap, replace=False))) if n > cap else source.take(np.arange(n))
    quantizer = faiss.IndexFlatIP(d)
    clustering = faiss.Clustering(d, nlist)
    clustering.niter, clustering.seed = params.pq_train_iters, params.seed + 1
    clustering.train(sample, quantizer)
    ivf = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.pq.cp.niter = params.pq_train_iters
    with backend.faiss_threads(1):
        ivf.train(sample)  # the quantizer already holds nlist centroids: this trains the product quantizer only
    del sample
    timings["train"] = time.perf_counter() - t0

    tune = params.nprobe is None
    # at least 500 held-out rows: the depth is tuned in fine steps, and the first to pass 200 queries' noisy
    # recall tends to pass it by luck (0.967 measured on 200, 0.956 on 1000 fresh queries, 1M vectors)
    held_params = dataclasses.replace(params, tune_queries=max(params.tune_queries, 500))
    _, held = split_for_tuning(n, held_params, tune and params.tune_vectors is None)
    if not tune:
        queries = None
    elif params.tune_vectors is not None:
        queries = backend.normalize(backend.as_float32(params.tune_vectors))
    else:
        queries = source.take(held) if len(held) else None
    truth = backend.RunningTopk(queries, min(params.tune_k, n - len(held))) if queries is not None else None
    writer = SegmentWriter(n, d, params.disk_dtype, params.disk_dir)
    t1, start = time.perf_counter(), 0
    try:
        for block in source.chunks(params.chunk_rows):
            ids = np.arange(start, start + len(block), dtype=np.int64)
            writer.write(block)
            keep = ~np.isin(ids, held) if len(held) else None
            if keep is None or keep.all():
                ivf.add_with_ids(block, ids)
            else:
                ivf.add_with_ids(np.ascontiguousarray(block[keep]), ids[keep])
            if truth is not None:
                truth.update(block, start, held)
            start += len(block)
        segment = writer.close()
    except BaseException:
        writer.abort()
        raise
    if start != n:
        raise ValueError(f"modality {modality}: the source gave {start} vectors, {n} expected")
    timings["add"] = time.perf_counter() - t1

    settings = {"nlist": nlist, "pq_m": m, "nbits": 4, "fast_scan": True, "refine": True, "k_factor": params.k_factor,
                "disk_dtype": params.disk_dtype}
    vectors = DiskVectors([segment], d, params.disk_dir)
    part = Part(modality, "ivfpq_disk", "faiss", rows, ivf, d, settings, vectors)
    t2 = time.perf_counter()
    tune_part(part, queries, truth.result()[1] if truth is not None else None, "nprobe", nprobe_values(nlist),
              params.nprobe, params)
    timings["tune"] = time.perf_counter() - t2
    if len(held):
        ivf.add_with_ids(queries, held.astype(np.int64))
    part.timings = {key: round(v, 2) for key, v in timings.items()}
    log.info("ivfpq_disk part %s of %d vectors: %s; seconds per stage %s; %.2f GB of vectors in %s", modality, n,
             part.settings, part.timings, vectors.nbytes / 2**30, segment.path)
    return part
