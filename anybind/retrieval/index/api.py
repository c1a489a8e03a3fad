"""The Index API: :class:`Index` (search, add, save, load), :class:`Hit`, and :func:`build_index`."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ...errors import CheckpointError
from ..store import EmbeddingStore
from . import backend, storage
from .disk import ArraySource, ShardSource, build_disk_part
from .parts import Part
from .parts import build_memory_part
from .policy import IndexParams, resolve_kind
from .rows import LAZY_BYTES, RowMetadata

def build_part(modality: str, vectors: np.ndarray, rows: np.ndarray, kind: str, refine: bool,
               params: IndexParams) -> Part:
    """A part of ``kind`` over ``vectors`` (unit float32): on disk for ``ivfpq_disk``, else in memory."""
    if kind == "ivfpq_disk":
        return build_disk_part(modality, ArraySource(vectors), rows, params)
    return build_memory_part(modality, vectors, rows, kind, refine, params)


log = logging.getLogger(__name__)


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
    :class:`Hit` per query, best first, restricted to ``modalities`` when given. ``metadata`` is a list of row
    dicts, or for large indexes a :class:`~.rows.RowMetadata` that reads rows from disk when asked.
    """

    def __init__(self, embed_dim: int, parts: dict[str, Part], metadata: Sequence[dict], info: dict | None = None):
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
        q = backend.as_float32(queries)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.embed_dim:
            raise ValueError(f"queries must be (Q, {self.embed_dim}), got {tuple(q.shape)}")
        return backend.normalize(q)

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
        v = backend.normalize(backend.as_float32(vectors))
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
                k, refine = resolve_kind(kind, len(sel), self.embed_dim, memory_budget, params)
                self.parts[m] = build_part(m, vm, sel + base, k, refine, params or IndexParams())
        self.metadata.extend(dict(r) for r in metadata)

    def save(self, path: str | Path) -> Path:
        """Write the index folder atomically: data files under content-addressed names, ``index.json`` last.

        An interrupted save leaves the previous manifest and every file it lists untouched. Only files an earlier
        save of this index listed are ever removed; a folder holding anything else is refused, and one writer at a
        time holds the folder's lock.
        """
        return storage.save_index(self, path)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Index":
        """Load a saved index; a missing or damaged file raises :class:`CheckpointError` naming it.

        ``verify`` checks every file's sha256 (for an ``ivfpq_disk`` index that reads its whole vector file)."""
        return cls(*storage.load_index(path, verify=verify))


def _add_from_stores(index: Index, stores: Sequence[EmbeddingStore], *, kind: str, memory_budget, modalities,
                     params: IndexParams) -> None:
    """Index the stores' shards, one modality at a time, reading ``ivfpq_disk`` parts a chunk at a time."""
    wanted = None if modalities is None else ({modalities} if isinstance(modalities, str) else set(modalities))
    shards = [sh for s in stores for sh in s.shards if wanted is None or sh.modality in wanted]
    starts = np.concatenate([[0], np.cumsum([sh.count for sh in shards], dtype=np.int64)])
    if sum(sh.meta_path.stat().st_size for sh in shards) >= LAZY_BYTES:
        index.metadata = RowMetadata.from_files([sh.meta_path for sh in shards], [sh.count for sh in shards])
    else:
        index.metadata = [row for sh in shards for row in sh.load_metadata()]
    for m in dict.fromkeys(sh.modality for sh in shards):
        mine = [i for i, sh in enumerate(shards) if sh.modality == m]
        rows = np.concatenate([np.arange(starts[i], starts[i + 1], dtype=np.int64) for i in mine])
        k, refine = resolve_kind(kind, len(rows), index.embed_dim, memory_budget, params)
        if k == "ivfpq_disk" and backend.import_faiss() is not None:
            index.parts[m] = build_disk_part(m, ShardSource([shards[i] for i in mine], index.embed_dim), rows, params)
        else:
            vectors = np.concatenate([np.asarray(shards[i].load_vectors(), dtype=np.float32) for i in mine])
            index.parts[m] = build_part(m, backend.normalize(vectors), rows, k, refine, params)


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

    ``kind`` is ``"auto"`` (by size and ``memory_budget``, e.g. ``"4G"``), ``"flat"``, ``"hnsw"``, ``"ivfpq"`` or
    ``"ivfpq_disk"``; ``modalities`` keeps only those. Vectors are L2-normalized; the score is the inner product
    (cosine). From stores, an ``ivfpq_disk`` part reads its shards a chunk at a time (the store may exceed RAM).
    """
    params = params or IndexParams()
    faiss = backend.import_faiss()
    if threads and faiss is not None:
        faiss.omp_set_num_threads(int(threads))
    t0 = time.perf_counter()
    if isinstance(source, (np.ndarray, torch.Tensor)):
        vectors = backend.as_float32(source)
        if metadata is None:
            metadata = [{"id": str(i), "modality": "vector", "source": None} for i in range(len(vectors))]
        metadata = list(metadata)
        if modalities is not None:
            wanted = {modalities} if isinstance(modalities, str) else set(modalities)
            keep = [i for i, r in enumerate(metadata) if r["modality"] in wanted]
            vectors, metadata = vectors[keep], [metadata[i] for i in keep]
        index = Index(vectors.shape[1], {}, [], {})
        index.add(vectors, metadata, kind=kind, memory_budget=memory_budget, params=params)
    else:
        sources = [source] if isinstance(source, (EmbeddingStore, str, Path)) else list(source)
        stores = [s if isinstance(s, EmbeddingStore) else EmbeddingStore.open(s) for s in sources]
        if len({s.embed_dim for s in stores}) > 1:
            raise CheckpointError(f"stores of different widths cannot share an index: { {str(s.path): s.embed_dim for s in stores} }")
        info = {"stores": [str(s.path.resolve()) for s in stores], "model": stores[0].model if stores else {}}
        index = Index(stores[0].embed_dim if stores else 0, {}, [], info)
        _add_from_stores(index, stores, kind=kind, memory_budget=memory_budget, modalities=modalities, params=params)
    index.info["build_seconds"] = round(time.perf_counter() - t0, 3)
    log.info("built %r in %.1f s", index, index.info["build_seconds"])
    return index
