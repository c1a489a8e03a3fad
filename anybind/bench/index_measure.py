"""What the index benchmarks measure with: process memory (RSS and its peak), load averages, a faiss index's size,
and the sample collections (unit vectors from a mixture of clusters or uniform on the sphere, made in chunks)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """Resident memory of this process now."""
    return _status_kb("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since the last :func:`reset_peak_rss`)."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> None:
    """Restart the peak-RSS counter at the current RSS (Linux ``clear_refs``); silently a no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def load_averages() -> list[float]:
    """1/5/15-minute load averages (latencies on a shared machine read next to them)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def index_bytes(impl) -> int:
    """Bytes a faiss index holds in its main arrays (vectors, codes, ids, graph links, centroids)."""
    import faiss

    impl = faiss.downcast_index(impl)
    if isinstance(impl, faiss.IndexRefine):
        return index_bytes(impl.base_index) + index_bytes(impl.refine_index)
    if isinstance(impl, faiss.IndexHNSW):
        h = impl.hnsw
        return index_bytes(impl.storage) + h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
    if isinstance(impl, faiss.IndexIVF):
        lists = impl.invlists
        stored = sum(lists.list_size(i) for i in range(impl.nlist))
        extra = impl.pq.M * impl.pq.ksub * impl.pq.dsub * 4 if isinstance(impl, faiss.IndexIVFPQ) else 0
        return index_bytes(impl.quantizer) + stored * (impl.code_size + 8) + extra
    if isinstance(impl, faiss.IndexFlat):
        return impl.ntotal * impl.d * 4
    return impl.ntotal * impl.sa_code_size() if hasattr(impl, "sa_code_size") else 0


def iter_sample_vectors(n: int, d: int, dist: str, *, seed: int = 0, clusters: int = 1000, spread: float = 1.0,
                        chunk: int = 65536):
    """:func:`sample_vectors` a ``(<= chunk, d)`` block at a time (a collection larger than memory)."""
    rng = np.random.default_rng(seed)
    centres = None
    if dist == "mixture":
        centres = np.random.default_rng(12345).standard_normal((clusters, d)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    elif dist != "uniform":
        raise ValueError(f"dist must be 'mixture' or 'uniform', got {dist!r}")
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = rng.standard_normal((m, d), dtype=np.float32)
        if centres is not None:
            x = centres[rng.integers(0, clusters, m)] + (spread / np.sqrt(d)) * x
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def sample_vectors(n: int, d: int, dist: str, *, seed: int = 0, clusters: int = 1000, spread: float = 1.0,
                   chunk: int = 65536) -> np.ndarray:
    """``(n, d)`` float32 unit vectors; ``mixture``: centre + Gaussian noise of norm ~``spread``; ``uniform``."""
    out = np.empty((n, d), dtype=np.float32)
    at = 0
    for block in iter_sample_vectors(n, d, dist, seed=seed, clusters=clusters, spread=spread, chunk=chunk):
        out[at:at + len(block)] = block
        at += len(block)
    return out
