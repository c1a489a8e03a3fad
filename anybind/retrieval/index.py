"""Vector indexes for inner-product search over unit vectors, one sub-index per modality.

Keeping a sub-index per modality makes "search only images and videos" exact and cheap (search those parts,
merge their top-k) instead of filtering a shared graph. Each part is one of:

* ``flat``  exact search (faiss ``IndexFlatIP``, or the PyTorch path when faiss is absent);
* ``hnsw``  faiss ``IndexHNSWFlat`` (inner product); ``efSearch`` tuned at build time to a target recall;
* ``ivfpq`` faiss ``IndexIVFPQ``, wrapped in ``IndexRefineFlat`` (exact re-ranking) when memory allows;
  ``nprobe`` tuned at build time.

``kind="auto"`` picks per part by size and memory budget: flat up to ``flat_max`` vectors, HNSW while its
estimated memory fits the budget, IVF-PQ beyond. Saved indexes are a folder with ``index.json`` (written last,
holding the sha256 of every file) so a damaged or half-written index is detected on load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..io import WriterLock, atomic_write_json, check_owned_folder, clean_temp_files, sha256_file
from ..errors import CheckpointError
from .store import EmbeddingStore, _jsonl_bytes, _read_jsonl

log = logging.getLogger(__name__)

INDEX_FORMAT = "anybind-index"
INDEX_VERSION = 1
JOURNAL_NAME = ".index.pending.json"  # the data files a save is writing, until its index.json lists them
KINDS = ("auto", "flat", "hnsw", "ivfpq")


def import_faiss():
    """The faiss module, or ``None`` when it is not installed (tests force this to exercise the PyTorch path)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def parse_bytes(value: int | float | str | None) -> int | None:
    """``"4G"``, ``"512MiB"``, ``2e9`` -> bytes."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    s = value.strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(float(s))


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
    pq_m: int | None = None         # bytes per code (must divide D); D/16 with refine, D/8 without
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


def estimate_memory(kind: str, n: int, d: int, params: IndexParams | None = None, refine: bool = True) -> int:
    """Approximate resident bytes of an index part."""
    p = params or IndexParams()
    if kind == "flat":
        return n * d * 4
    if kind == "hnsw":
        return int(n * d * 4 + n * p.hnsw_m * 2 * 4 * 1.15 + n * 16)
    if kind == "ivfpq":
        nlist = p.ivf_nlist or _default_nlist(n)
        m = p.pq_m or _default_pq_m(d, refine)
        return n * (m + 8) + nlist * d * 4 + (n * d * 4 if refine else 0)
    raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")


def choose_kind(n: int, d: int, memory_budget: int | None = None, params: IndexParams | None = None) -> tuple[str, bool]:
    """``(kind, refine)`` for ``n`` vectors of width ``d`` under ``memory_budget`` bytes."""
    p = params or IndexParams()
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    if n <= p.flat_max:
        return "flat", False
    if n <= p.hnsw_max and estimate_memory("hnsw", n, d, p) <= budget:
        return "hnsw", False
    refine = p.refine if p.refine is not None else estimate_memory("ivfpq", n, d, p, refine=True) <= budget
    return "ivfpq", refine


def _default_nlist(n: int) -> int:
    return int(max(1, min(65536, round(math.sqrt(n)))))


def _default_pq_m(d: int, refine: bool = True) -> int:
    """Bytes per code: D/16 when candidates are re-ranked exactly (codes only shortlist), D/8 otherwise."""
    for m in ((d // 16, d // 8) if refine else (d // 8,)) + (d // 4, d // 2, d):
        if m >= 1 and d % m == 0 and m <= 128:
            return m
    return 1


def _as_float32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); already-unit float32 input is returned as is, without a copy."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    if x.dtype == np.float32 and x.flags.c_contiguous and np.all(np.abs(n - 1) < 1e-4):
        return x
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


def _add_rows(impl, vectors: np.ndarray, positions: np.ndarray | None, chunk: int = 65536) -> None:
    """``impl.add(vectors[positions])`` in chunks, so a large selection is never copied whole."""
    if positions is None:
        impl.add(vectors)
        return
    for lo in range(0, len(positions), chunk):
        impl.add(np.ascontiguousarray(vectors[positions[lo:lo + chunk]]))


def exact_topk(queries: np.ndarray, vectors: np.ndarray | torch.Tensor, k: int, chunk: int = 65536,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k in PyTorch, streaming over ``vectors`` in chunks. Missing slots: -inf / -1.

    ``exclude`` (sorted row numbers) leaves those rows out without copying the rest.
    """
    q = torch.from_numpy(_as_float32(queries))
    db = vectors if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.asarray(vectors))
    skip = None if exclude is None or len(exclude) == 0 else torch.from_numpy(np.asarray(exclude, dtype=np.int64))
    n = db.shape[0]
    best_s = torch.full((q.shape[0], k), -math.inf)
    best_i = torch.full((q.shape[0], k), -1, dtype=torch.long)
    for lo in range(0, n, chunk):
        block = db[lo:lo + chunk].float()
        s = q @ block.T
        if skip is not None:
            inside = skip[(skip >= lo) & (skip < lo + block.shape[0])] - lo
            s[:, inside] = -math.inf
        kk = min(k, s.shape[1])
        ts, ti = torch.topk(s, kk, dim=1)
        ti = torch.where(torch.isfinite(ts), ti + lo, -1)
        cat_s, cat_i = torch.cat([best_s, ts], 1), torch.cat([best_i, ti], 1)
        order = torch.topk(cat_s, k, dim=1).indices
        best_s, best_i = torch.gather(cat_s, 1, order), torch.gather(cat_i, 1, order)
    return best_s.numpy(), best_i.numpy()


@contextmanager
def _faiss_threads(count: int | None):
    """Run faiss with ``count`` OpenMP threads inside the block (the setting is per calling thread)."""
    faiss = import_faiss()
    if faiss is None or count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class _Part:
    """The vectors of one modality: a faiss index or an exact PyTorch matrix, plus their global row numbers."""

    def __init__(self, modality: str, kind: str, backend: str, rows: np.ndarray, impl: Any, d: int, settings: dict):
        self.modality, self.kind, self.backend = modality, kind, backend
        self.rows = np.asarray(rows, dtype=np.int64)
        self.impl, self.d = impl, d
        self.settings = dict(settings)
        self.timings: dict[str, float] = {}  # seconds per build stage (train, add, tune); not saved

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.backend == "torch":
            s, i = exact_topk(q, self.impl, k)
        else:
            # faiss parallelises over queries: for one query a second thread only adds a fork/join, which costs
            # milliseconds when the cores are busy (IndexRefine's re-ranking loop forks even for one query)
            with _faiss_threads(1 if len(q) == 1 else None):
                s, i = self.impl.search(q, k)
        rows = np.where(i >= 0, self.rows[np.clip(i, 0, None)], -1)
        return s.astype(np.float32), rows

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        if self.backend == "torch":
            self.impl = torch.cat([self.impl, torch.from_numpy(vectors)])
        else:
            self.impl.add(vectors)
        self.rows = np.concatenate([self.rows, rows.astype(np.int64)])

    def apply_settings(self) -> None:
        faiss = import_faiss()
        if self.backend != "faiss":
            return
        if self.kind == "hnsw" and "ef_search" in self.settings:
            self.impl.hnsw.efSearch = int(self.settings["ef_search"])
        if self.kind == "ivfpq":
            if "nprobe" in self.settings:
                faiss.extract_index_ivf(self.impl).nprobe = int(self.settings["nprobe"])
            if self.settings.get("refine"):
                self.impl.k_factor = float(self.settings.get("k_factor", 8))

    def write(self, path: str) -> None:
        """Write the vectors / faiss index to ``path`` (streamed to disk: no second in-memory copy)."""
        if self.backend == "torch":
            _save_npy(path, self.impl.numpy())
        else:
            import_faiss().write_index(self.impl, path)

    def memory_bytes(self) -> int:
        refine = bool(self.settings.get("refine"))
        return estimate_memory(self.kind, len(self), self.d, IndexParams(
            hnsw_m=self.settings.get("m", 32), ivf_nlist=self.settings.get("nlist"), pq_m=self.settings.get("pq_m")), refine)


def _goal(params: IndexParams) -> float:
    return min(1.0, params.target_recall + params.tune_margin)


def _measure(part: _Part, queries: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k of ``part`` (current settings) on ``queries`` whose exact top-k (positions in ``part.impl``) is ``truth``."""
    part.apply_settings()
    _, got = part.impl.search(queries, truth.shape[1])
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got.tolist(), truth.tolist())]))


def _tune(part: _Part, queries: np.ndarray, truth: np.ndarray, knob: str, values: Sequence[int], params: IndexParams) -> float:
    """Set ``knob`` to the smallest of ``values`` whose recall reaches the goal (else the largest)."""
    chosen, recall = values[-1], 0.0
    for v in values:
        part.settings[knob] = v
        recall = _measure(part, queries, truth)
        if recall >= _goal(params):
            chosen = v
            break
    part.settings[knob] = chosen
    part.settings["tuned_recall"] = round(recall, 4)
    part.apply_settings()
    return recall


def _tune_refine_depth(part: _Part, queries: np.ndarray, truth: np.ndarray, values: Sequence[int], params: IndexParams) -> None:
    """IVF-PQ + re-ranking: the shortlist depth ``k_factor`` first, at a generous ``nprobe`` (so missed lists do
    not hide a shortlist that is too short): the smallest of k_factor x (1, 2, 4, 8) reaching the target."""
    generous = [v for v in values if v <= max(values[0], part.settings["nlist"] // 8)][-1]
    part.settings["nprobe"] = generous
    for f in (1, 2, 4, 8):
        part.settings["k_factor"] = params.k_factor * f
        if _measure(part, queries, truth) >= _goal(params):
            break


def _split_for_tuning(n: int, params: IndexParams, needed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` positions: a sample held out of the first build to tune on (none if not needed)."""
    everything = np.arange(n)
    if not needed or n < 4 * params.tune_queries // 2 or n < 50:
        return everything, everything[:0]
    held = np.sort(np.random.default_rng(params.seed).choice(n, size=min(params.tune_queries, n // 4), replace=False))
    return np.setdiff1d(everything, held, assume_unique=True), held


def _build_part(modality: str, vectors: np.ndarray, rows: np.ndarray, kind: str, refine: bool, params: IndexParams) -> _Part:
    faiss = import_faiss()
    n, d = vectors.shape
    if faiss is None:
        if kind not in ("flat",):
            raise ImportError(f"index kind {kind!r} needs faiss (pip install faiss-cpu); kind='flat' or 'auto' works without it")
        return _Part(modality, "flat", "torch", rows, torch.from_numpy(vectors.copy()), d, {})
    if kind == "flat":
        impl = faiss.IndexFlatIP(d)
        impl.add(vectors)
        return _Part(modality, "flat", "faiss", rows, impl, d, {})
    timings, t0 = {}, time.perf_counter()
    if kind == "hnsw":
        kept, held = _split_for_tuning(n, params, params.ef_search is None and params.tune_vectors is None)
        impl = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        impl.hnsw.efConstruction = params.ef_construction
        _add_rows(impl, vectors, kept if len(held) else None)
        timings["add"] = time.perf_counter() - t0
        settings = {"m": params.hnsw_m, "ef_construction": params.ef_construction}
        knob, values = "ef_search", (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
        fixed = params.ef_search
    elif kind == "ivfpq":
        nlist = params.ivf_nlist or _default_nlist(n)
        nlist = max(1, min(nlist, n // 39 or 1))
        m = params.pq_m or _default_pq_m(d, refine)
        if d % m:
            raise ValueError(f"pq_m={m} must divide the vector width {d}")
        nbits = 8 if n >= 256 * 39 else max(4, min(8, int(math.log2(max(16, n // 39)))))
        kept, held = _split_for_tuning(n, params, params.nprobe is None and params.tune_vectors is None)
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivf.pq.cp.niter = params.pq_train_iters
        rng = np.random.default_rng(params.seed)
        cap = max(64 * nlist, 40 * (1 << nbits))  # k-means cost grows with the sample: enough points per centroid
        ivf.train(vectors if n <= cap else vectors[np.sort(rng.choice(n, cap, replace=False))])
        timings["train"] = time.perf_counter() - t0
        impl = faiss.IndexRefineFlat(ivf) if refine else ivf
        _add_rows(impl, vectors, kept if len(held) else None)
        timings["add"] = time.perf_counter() - t0 - timings["train"]
        settings = {"nlist": nlist, "pq_m": m, "nbits": nbits, "refine": bool(refine), "k_factor": params.k_factor}
        knob = "nprobe"
        values = [p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512) if p <= nlist] or [1]
        fixed = params.nprobe
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    part = _Part(modality, kind, "faiss", rows[kept], impl, d, settings)
    t0 = time.perf_counter()
    if fixed is not None:
        part.settings[knob] = fixed
        part.apply_settings()
    elif params.tune_vectors is not None or len(held):
        # tuning queries: given ones, or stored vectors held out of the index while tuning (added afterwards) so
        # they behave like fresh queries from the collection's own distribution
        queries = normalize(_as_float32(params.tune_vectors)) if params.tune_vectors is not None else vectors[held]
        k = min(params.tune_k, len(kept))
        _, truth = exact_topk(queries, vectors, k, exclude=held if len(held) else None)
        if len(held):  # positions in `vectors` -> positions among the kept rows (the ids inside the faiss index)
            truth = np.where(truth >= 0, np.searchsorted(kept, truth), -1)
        if kind == "ivfpq" and refine:  # re-rank more candidates when the PQ shortlist alone misses neighbours
            _tune_refine_depth(part, queries, truth, values, params)
        recall = _tune(part, queries, truth, knob, values, params)
        if recall < params.target_recall:
            log.warning("%s index of %d vectors (modality %s) reaches recall@%d %.2f at most (target %.2f); the data may be "
                        "near-uniform, where exact search (kind='flat') is the honest choice", kind, n, modality,
                        params.tune_k, recall, params.target_recall)
    else:  # too small to hold anything out: search generously
        part.settings[knob] = values[min(len(values) - 1, 6)]
        part.apply_settings()
    timings["tune"] = time.perf_counter() - t0
    if len(held):
        part.add(np.ascontiguousarray(vectors[held]), rows[held])
    part.timings = {key: round(v, 2) for key, v in timings.items()}
    log.info("%s part %s of %d vectors: %s; seconds per stage %s", kind, modality, n, part.settings, part.timings)
    return part


@dataclass
class Hit:
    """One search result: the row's score (inner product) and its stored metadata."""

    row: int
    score: float
    id: str
    modality: str
    source: str | None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Index:
    """Inner-product search over unit vectors of several modalities.

    ``search(queries, k, modalities=None)`` takes ``(Q, D)`` (or ``(D,)``) queries and returns one list of
    :class:`Hit` per query, best first, restricted to ``modalities`` when given.
    """

    def __init__(self, embed_dim: int, parts: dict[str, _Part], metadata: list[dict], info: dict | None = None):
        self.embed_dim = embed_dim
        self.parts = parts
        self.metadata = metadata
        self.info = dict(info or {})

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        parts = ", ".join(f"{m}: {p.kind}/{p.backend} x{len(p)}" for m, p in self.parts.items())
        return f"Index(dim={self.embed_dim}, rows={len(self)}, parts={{{parts}}})"

    @property
    def modalities(self) -> list[str]:
        return list(self.parts)

    @property
    def model(self) -> dict:
        return dict(self.info.get("model") or {})

    def describe(self) -> dict:
        return {m: {"kind": p.kind, "backend": p.backend, "count": len(p), **p.settings} for m, p in self.parts.items()}

    def _queries(self, queries) -> np.ndarray:
        q = _as_float32(queries)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.embed_dim:
            raise ValueError(f"queries must be (Q, {self.embed_dim}), got {tuple(q.shape)}")
        return normalize(q)

    def search_arrays(self, queries, k: int = 10, modalities: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of shape ``(Q, k)``, best first; empty slots hold ``-inf`` and ``-1``."""
        q = self._queries(queries)
        names = self.modalities if modalities is None else ([modalities] if isinstance(modalities, str) else list(modalities))
        unknown = [m for m in names if m not in self.parts]
        if unknown and modalities is not None and len(unknown) == len(names):
            raise ValueError(f"index holds no vectors of {unknown}; it has {self.modalities}")
        scores, rows = [], []
        for m in names:
            if m in self.parts:
                s, r = self.parts[m].search(q, k)
                scores.append(s)
                rows.append(r)
        if not scores:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        s, r = np.concatenate(scores, 1), np.concatenate(rows, 1)
        s = np.where(r >= 0, s, -np.inf)
        if s.shape[1] < k:
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            r = np.pad(r, ((0, 0), (0, pad)), constant_values=-1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)

    def search(self, queries, k: int = 10, modalities: Iterable[str] | None = None) -> list[list[Hit]]:
        scores, rows = self.search_arrays(queries, k, modalities)
        out = []
        for srow, rrow in zip(scores, rows):
            hits = []
            for s, r in zip(srow, rrow):
                if r < 0:
                    continue
                meta = self.metadata[r]
                extra = {key: v for key, v in meta.items() if key not in ("id", "modality", "source")}
                hits.append(Hit(int(r), float(s), str(meta.get("id")), meta.get("modality", ""), meta.get("source"), extra))
            out.append(hits)
        return out

    def add(self, vectors, metadata: Sequence[Mapping[str, Any]], *, kind: str = "auto", memory_budget: int | str | None = None,
            params: IndexParams | None = None) -> None:
        """Append vectors (rows of ``metadata`` need ``modality``); a modality new to the index gets a new part."""
        v = normalize(_as_float32(vectors))
        if v.ndim != 2 or v.shape[1] != self.embed_dim:
            raise ValueError(f"vectors must be (n, {self.embed_dim}), got {v.shape}")
        if len(metadata) != len(v):
            raise ValueError(f"{len(v)} vectors but {len(metadata)} metadata rows")
        base = len(self.metadata)
        mods = np.array([str(r["modality"]) for r in metadata])
        for m in dict.fromkeys(mods.tolist()):
            sel = np.flatnonzero(mods == m)
            vm = v if len(sel) == len(v) else v[sel]
            if m in self.parts:
                self.parts[m].add(vm, sel + base)
            else:
                k, refine = _resolve_kind(kind, len(sel), self.embed_dim, memory_budget, params)
                self.parts[m] = _build_part(m, vm, sel + base, k, refine, params or IndexParams())
        self.metadata.extend(dict(r) for r in metadata)

    def save(self, path: str | Path) -> Path:
        """Write the index folder atomically: data files under content-addressed names, ``index.json`` last.

        An interrupted save leaves the previous manifest and every file it lists untouched. Only files an earlier
        save of this index listed are ever removed; a folder holding anything else is refused, and one writer at a
        time holds the folder's lock.
        """
        path = Path(path)
        # a first save killed before its index.json left only files its journal names: the folder is still ours
        check_owned_folder(path, "index.json", "index", allowed={JOURNAL_NAME, *_claimed(path / JOURNAL_NAME)})
        with WriterLock(path, "index"):
            clean_temp_files(path)
            previous = _listed_files(path / "index.json")
            journal = path / JOURNAL_NAME
            _drop_uncommitted(path, journal, previous)  # data files of a save killed before its index.json
            claimed: list[str] = []

            def claim(name: str) -> None:  # noted before the file takes its name, so a killed save leaves no orphan
                claimed.append(name)
                atomic_write_json(journal, {"files": claimed})

            def addressed(stem: str, ext: str, write) -> tuple[str, str]:
                return _write_addressed(path, stem, ext, write, claim)

            names = {"metadata": addressed("metadata", "jsonl", lambda p: Path(p).write_bytes(_jsonl_bytes(self.metadata)))}
            for m, part in self.parts.items():
                names[f"{m}.rows"] = addressed(f"{m}.rows", "npy", lambda p, r=part.rows: _save_npy(p, r))
                names[m] = addressed(f"{m}.{part.kind}", "npy" if part.backend == "torch" else "faiss", part.write)
            entry = lambda key: {"name": names[key][0], "sha256": names[key][1]}  # noqa: E731
            parts = [{"modality": m, "kind": p.kind, "backend": p.backend, "count": len(p), "settings": p.settings,
                      "rows": entry(f"{m}.rows"), "data": entry(m)} for m, p in self.parts.items()]
            manifest = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "embed_dim": self.embed_dim,
                        "metric": "inner_product", "count": len(self), "info": self.info, "parts": parts,
                        "metadata": entry("metadata")}
            listed = {n for n, _ in names.values()}
            # the earlier save's files the new manifest no longer lists: noted, then removed once it is committed
            atomic_write_json(journal, {"files": claimed, "drop": sorted(previous - listed)})
            atomic_write_json(path / "index.json", manifest)  # the commit
            for name in previous - listed:
                (path / name).unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Index":
        """Load a saved index; a missing or damaged file raises :class:`CheckpointError` naming it."""
        path = Path(path)
        mpath = path / "index.json"
        if not mpath.exists():
            raise CheckpointError(f"{path} is not a saved index: {mpath.name} is missing")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"index manifest {mpath} is damaged: {exc}") from exc
        if manifest.get("format") != INDEX_FORMAT:
            raise CheckpointError(f"{mpath} is not an anybind index manifest (format={manifest.get('format')!r})")

        def checked(entry: dict) -> Path:
            f = path / entry["name"]
            if not f.exists():
                raise CheckpointError(f"index file {f} is missing (listed in {mpath})")
            if verify and sha256_file(f) != entry["sha256"]:
                raise CheckpointError(f"index file {f} is damaged: its sha256 does not match {mpath}")
            return f

        metadata = _read_jsonl(checked(manifest["metadata"]))
        d = int(manifest["embed_dim"])
        parts = {}
        for e in manifest["parts"]:
            rows = np.load(checked(e["rows"]), allow_pickle=False)
            f = checked(e["data"])
            try:
                if e["backend"] == "torch":
                    impl = torch.from_numpy(np.load(f, allow_pickle=False))
                else:
                    faiss = import_faiss()
                    if faiss is None:
                        raise CheckpointError(f"index file {f} is a faiss index; install faiss-cpu to load it")
                    impl = faiss.read_index(str(f))
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(f"index file {f} could not be read: {exc}") from exc
            part = _Part(e["modality"], e["kind"], e["backend"], rows, impl, d, e.get("settings", {}))
            part.apply_settings()
            if len(part) != e["count"] or (part.backend == "faiss" and impl.ntotal != len(part)):
                raise CheckpointError(f"index file {f} holds {getattr(impl, 'ntotal', len(impl))} vectors, {mpath} says {e['count']}")
            parts[e["modality"]] = part
        if sum(len(p) for p in parts.values()) != len(metadata):
            raise CheckpointError(f"index {path}: {len(metadata)} metadata rows but {sum(len(p) for p in parts.values())} vectors")
        return cls(d, parts, metadata, manifest.get("info"))


def _listed_files(manifest_path: Path) -> set[str]:
    """Names of the data files an index manifest lists (plain names inside its folder only)."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return set()
    entries = [manifest.get("metadata") or {}]
    for part in manifest.get("parts") or []:
        entries += [part.get("rows") or {}, part.get("data") or {}]
    names = {str(e.get("name")) for e in entries if isinstance(e, dict) and e.get("name")}
    return {n for n in names if Path(n).name == n and n not in ("index.json", ".anybind.lock")}


def _claimed(journal: Path) -> set[str]:
    """The plain file names an index save's journal names: the files it wrote and the earlier files it was about to
    remove (none when there is no readable journal). Those the manifest lists are never removed."""
    try:
        entry = json.loads(journal.read_text())
        claimed = [*(entry.get("files") or []), *(entry.get("drop") or [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in map(str, claimed) if Path(n).name == n and n not in ("index.json", JOURNAL_NAME, ".anybind.lock")}


def _drop_uncommitted(folder: Path, journal: Path, listed: set[str]) -> None:
    """Remove the files an interrupted save named in its journal that the manifest does not list: what it wrote
    before it was killed ahead of its commit, or the earlier files it had not yet removed after it."""
    for name in _claimed(journal) - listed:
        (folder / name).unlink(missing_ok=True)
    journal.unlink(missing_ok=True)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array, allow_pickle=False)


def _write_addressed(folder: Path, stem: str, ext: str, write, claim=None) -> tuple[str, str]:
    """``write(tmp_path)``, fsync, ``claim(name)``, then rename to ``name = <stem>.<sha256[:12]>.<ext>``; returns
    ``(name, sha256)``."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        name = f"{stem}.{digest[:12]}.{ext}"
        if claim is not None:
            claim(name)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return name, digest


def _resolve_kind(kind: str, n: int, d: int, memory_budget, params) -> tuple[str, bool]:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    p = params or IndexParams()
    budget = parse_bytes(memory_budget)
    if kind == "auto":
        if import_faiss() is None:
            log.warning("faiss is not installed: using exact PyTorch search (pip install faiss-cpu for large collections)")
            return "flat", False
        return choose_kind(n, d, budget, p)
    if kind == "ivfpq":
        refine = p.refine if p.refine is not None else estimate_memory("ivfpq", n, d, p, True) <= (budget or default_memory_budget())
        return kind, refine
    return kind, False


def build_index(
    source: EmbeddingStore | str | Path | Sequence[EmbeddingStore | str | Path] | np.ndarray | torch.Tensor,
    metadata: Sequence[Mapping[str, Any]] | None = None,
    *,
    kind: str = "auto",
    memory_budget: int | str | None = None,
    modalities: Iterable[str] | None = None,
    params: IndexParams | None = None,
    threads: int | None = None,
) -> Index:
    """Build an :class:`Index` from a store (or several, merged), or from vectors plus metadata rows.

    ``kind`` is ``"auto"`` (by size and ``memory_budget``, e.g. ``"4G"``), ``"flat"``, ``"hnsw"`` or ``"ivfpq"``;
    ``modalities`` keeps only those. Vectors are L2-normalized; the score is the inner product (cosine).
    """
    params = params or IndexParams()
    faiss = import_faiss()
    if threads and faiss is not None:
        faiss.omp_set_num_threads(int(threads))
    info: dict[str, Any] = {}
    if isinstance(source, (np.ndarray, torch.Tensor)):
        vectors = _as_float32(source)
        if metadata is None:
            metadata = [{"id": str(i), "modality": "vector", "source": None} for i in range(len(vectors))]
        chunks = [(vectors, list(metadata))]
    else:
        sources = [source] if isinstance(source, (EmbeddingStore, str, Path)) else list(source)
        stores = [s if isinstance(s, EmbeddingStore) else EmbeddingStore.open(s) for s in sources]
        if len({s.embed_dim for s in stores}) > 1:
            raise CheckpointError(f"stores of different widths cannot share an index: { {str(s.path): s.embed_dim for s in stores} }")
        chunks = [(s.vectors(), s.metadata()) for s in stores]
        info["stores"] = [str(s.path.resolve()) for s in stores]
        info["model"] = stores[0].model if stores else {}
    if modalities is not None:
        wanted = {modalities} if isinstance(modalities, str) else set(modalities)
        chunks = [(v[[i for i, r in enumerate(m) if r["modality"] in wanted]], [r for r in m if r["modality"] in wanted])
                  for v, m in chunks]
    d = chunks[0][0].shape[1] if chunks else 0
    index = Index(d, {}, [], info)
    t0 = time.perf_counter()
    all_vecs = np.concatenate([v for v, _ in chunks]) if len(chunks) > 1 else chunks[0][0]
    all_meta = [r for _, m in chunks for r in m]
    index.add(all_vecs, all_meta, kind=kind, memory_budget=memory_budget, params=params)
    index.info["build_seconds"] = round(time.perf_counter() - t0, 3)
    log.info("built %r in %.1f s", index, index.info["build_seconds"])
    return index
