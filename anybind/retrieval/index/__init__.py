"""Vector indexes for inner-product search over unit vectors, one sub-index per modality.

Keeping a sub-index per modality makes "search only images and videos" exact and cheap (search those parts,
merge their top-k) instead of filtering a shared graph. Each part is one of:

* ``flat``  exact search (faiss ``IndexFlatIP``, or the PyTorch path when faiss is absent);
* ``hnsw``  faiss ``IndexHNSWFlat`` (inner product); ``efSearch`` tuned at build time to a target recall;
* ``ivfpq`` faiss ``IndexIVFPQ``, wrapped in ``IndexRefineFlat`` (exact re-ranking) when memory allows;
  ``nprobe`` tuned at build time;
* ``ivfpq_disk`` IVF-PQ codes in memory, exact re-ranking from float16 vectors read from disk, built in
  one streamed pass over a store's shards (for collections whose vectors do not fit in memory).

``kind="auto"`` picks per part by size and ``memory_budget`` (:mod:`.policy`). Saved indexes are a folder with
``index.json`` (written last, holding the sha256 of every file) so a damaged or half-written index is detected
on load (:mod:`.storage`).

Modules: :mod:`.policy` (knobs, memory estimates, the choice of kind), :mod:`.tuning` (search settings tuned to a
target recall), :mod:`.parts` (one modality's faiss or PyTorch index), :mod:`.disk` and :mod:`.vectorfile` (the
streamed ``ivfpq_disk`` build and its vectors on disk), :mod:`.rows` (row metadata read from disk),
:mod:`.storage` (save and load), :mod:`.api` (:class:`Index`, :func:`build_index`).
"""

from .api import Hit, Index, build_index
from .backend import as_float32, exact_topk, faiss_threads, import_faiss, normalize
from .parts import Part
from .policy import (KINDS, IndexParams, choose_kind, default_memory_budget, disk_bytes, estimate_memory, parse_bytes,
                     resolve_kind)
from .rows import RowMetadata
from .storage import INDEX_FORMAT, INDEX_VERSION
from .vectorfile import DiskVectors

__all__ = [
    "DiskVectors", "Hit", "INDEX_FORMAT", "INDEX_VERSION", "Index", "IndexParams", "KINDS", "Part", "RowMetadata",
    "as_float32", "build_index", "choose_kind", "default_memory_budget", "disk_bytes", "estimate_memory", "exact_topk",
    "faiss_threads", "import_faiss", "normalize", "parse_bytes", "resolve_kind",
]
