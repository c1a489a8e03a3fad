"""Which index a part gets: its knobs (:class:`IndexParams`), memory estimates, and the choice ``kind="auto"`` makes.

``auto`` picks per modality by size and memory budget: exact search up to ``flat_max`` vectors, HNSW while its
estimated memory fits the budget (and up to ``hnsw_max``), IVF-PQ with in-memory exact re-ranking while the float32
vectors fit beside the codes, and beyond that ``ivfpq_disk``: the codes stay in memory and the re-ranking reads
float16 vectors from disk, so the budget only has to hold the codes. Under a budget too small even for those,
IVF-PQ codes alone (smaller, no re-ranking).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from . import backend

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "hnsw", "ivfpq", "ivfpq_disk")
DISK_DTYPES = ("float16", "float32")


def parse_bytes(value: int | float | str | None) -> int | None:
    """``"4G"``, ``"512MiB"``, ``2e9`` -> bytes."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    s = value.strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(float(s))
    except ValueError:
        raise ValueError(f"memory budget {value!r} is not a size; give bytes or a string such as '4G' or '512M'") from None


def default_memory_budget() -> int:
    """Half of the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclass
class IndexParams:
    """Knobs of the approximate indexes; ``None`` means chosen from the data size (and tuned where noted)."""

    flat_max: int = 10_000          # auto: exact search up to this many vectors per modality
    hnsw_max: int = 250_000         # auto: HNSW up to this many (its build costs ~n log n graph searches), IVF-PQ beyond
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None    # tuned to target_recall when None
    ivf_nlist: int | None = None    # ~sqrt(n) lists
    pq_m: int | None = None         # sub-quantizers (must divide D): 8-bit, D/16 with refine, D/8 without;
                                    # ivfpq_disk: 4-bit (fast-scan), D/2 of them (D/4 bytes per vector)
    pq_train_iters: int = 10        # k-means iterations of the product quantizer (faiss default 25: slow, no better here)
    refine: bool | None = None      # exact re-ranking of IVF-PQ candidates; None: when memory allows
    k_factor: int = 8               # candidates re-ranked per result when refining (raised by tuning if needed)
    nprobe: int | None = None       # tuned to target_recall when None
    target_recall: float = 0.95
    tune_margin: float = 0.01       # tuning aims this much above target_recall: recall measured on a few hundred
                                    # queries is noisy, and the first setting to cross a line tends to cross it by luck
    tune_queries: int = 200
    tune_k: int = 10
    tune_vectors: Any = None        # (Q, D) queries to tune on (e.g. another modality's); default: held-out rows
    seed: int = 0
    # ivfpq_disk: exact re-ranking from vectors on disk
    disk_dtype: str = "float16"     # dtype of the re-ranking vectors on disk (float16 halves the file; scores to ~1e-3)
    disk_dir: str | None = None     # where a build writes them until Index.save moves them into the index folder
                                    # (default: the system temp folder; the same disk as the index makes save a rename)
    chunk_rows: int = 65_536        # rows read, encoded and written at a time when streaming a build
    train_max: int | None = None    # ivfpq_disk: vectors sampled to train its quantizers (default: 40 x nlist)


def estimate_memory(kind: str, n: int, d: int, params: IndexParams | None = None, refine: bool = True) -> int:
    """Approximate resident bytes of an index part (for ``ivfpq_disk``: its codes and ids; the vectors are on disk)."""
    p = params or IndexParams()
    if kind == "flat":
        return n * d * 4
    if kind == "hnsw":
        return int(n * d * 4 + n * p.hnsw_m * 2 * 4 * 1.15 + n * 16)
    if kind == "ivfpq":
        nlist = p.ivf_nlist or default_nlist(n)
        m = p.pq_m or default_pq_m(d, refine)
        return n * (m + 8) + nlist * d * 4 + (n * d * 4 if refine else 0)
    if kind == "ivfpq_disk":
        nlist = p.ivf_nlist or default_nlist(n)
        m = p.pq_m or default_disk_pq_m(d)
        return n * (m // 2 + 16) + nlist * d * 4
    raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")


def disk_bytes(n: int, d: int, params: IndexParams | None = None) -> int:
    """Bytes ``ivfpq_disk`` keeps on disk for its exact re-ranking."""
    return n * d * (2 if (params or IndexParams()).disk_dtype == "float16" else 4)


def choose_kind(n: int, d: int, memory_budget: int | None = None, params: IndexParams | None = None) -> tuple[str, bool]:
    """``(kind, refine)`` for ``n`` vectors of width ``d`` under ``memory_budget`` bytes."""
    p = params or IndexParams()
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    if n <= p.flat_max:
        return "flat", False
    if n <= p.hnsw_max and estimate_memory("hnsw", n, d, p) <= budget:
        return "hnsw", False
    if p.refine is False:
        return "ivfpq", False
    if estimate_memory("ivfpq", n, d, p, refine=True) <= budget:
        return "ivfpq", True
    if estimate_memory("ivfpq_disk", n, d, p) <= budget:
        return "ivfpq_disk", True
    if estimate_memory("ivfpq", n, d, p, refine=False) > budget:
        log.warning("%d vectors of width %d: even IVF-PQ codes alone (~%.2f GB) exceed the memory budget (%.2f GB); "
                    "building them anyway", n, d, estimate_memory("ivfpq", n, d, p, refine=False) / 2**30, budget / 2**30)
    return "ivfpq", False  # no room even for ivfpq_disk's D/4-byte codes: D/8-byte codes alone


def resolve_kind(kind: str, n: int, d: int, memory_budget, params: IndexParams | None) -> tuple[str, bool]:
    """``(kind, refine)`` of a requested kind (``auto`` resolved, IVF-PQ's re-ranking decided)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    p = params or IndexParams()
    budget = parse_bytes(memory_budget)
    if kind == "auto":
        if backend.import_faiss() is None:
            log.warning("faiss is not installed: using exact PyTorch search (pip install faiss-cpu for large collections)")
            return "flat", False
        return choose_kind(n, d, budget, p)
    if kind == "ivfpq":
        refine = p.refine if p.refine is not None else estimate_memory("ivfpq", n, d, p, True) <= (budget or default_memory_budget())
        return kind, refine
    return kind, kind == "ivfpq_disk"


def default_nlist(n: int) -> int:
    return int(max(1, min(65536, round(math.sqrt(n)))))


def default_pq_m(d: int, refine: bool = True) -> int:
    """Bytes per code: D/16 when candidates are re-ranked exactly (codes only shortlist), D/8 otherwise."""
    for m in ((d // 16, d // 8) if refine else (d // 8,)) + (d // 4, d // 2, d):
        if m >= 1 and d % m == 0 and m <= 128:
            return m
    return 1


def default_disk_pq_m(d: int) -> int:
    """ivfpq_disk's sub-quantizers: one per 2 dimensions, 4 bits each (D/4 bytes), scanned with SIMD (fast-scan)."""
    return d // 2 if d % 2 == 0 else d
