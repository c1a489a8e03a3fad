"""Embed collections into stores, index them, search any-to-any, evaluate.

::

    from anybind.retrieval import embed_to_store, build_index, Index, search
    summary = embed_to_store(model, "data/manifest.jsonl", "runs/emb")      # resumable, sharded
    index = build_index(summary.store, kind="auto", memory_budget="4G")
    index.save("runs/emb/index"); index = Index.load("runs/emb/index")
    hits = search(model, index, [("image", "cat.png"), ("text", "on grass")], weights=[1, 0.5], k=10,
                  modalities=["image", "video"])
"""

from .embed import EmbedSummary, embed_to_store, items_from_folder, items_from_manifest
from .index import Hit, Index, IndexParams, build_index, choose_kind, estimate_memory, exact_topk
from .search import as_queries, combine, contact_sheet, embed_queries, parse_query, search
from .store import EmbeddingStore, StoreWriter, merge_stores, write_store

__all__ = [
    "EmbedSummary", "EmbeddingStore", "Hit", "Index", "IndexParams", "StoreWriter", "as_queries", "build_index",
    "choose_kind", "combine", "contact_sheet", "embed_queries", "embed_to_store", "estimate_memory", "exact_topk",
    "items_from_folder", "items_from_manifest", "merge_stores", "parse_query", "search", "write_store",
]
