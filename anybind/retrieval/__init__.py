"""Embed collections into stores, index them, search any-to-any, evaluate.

::

    from anybind.retrieval import embed_to_store, build_index, Index, search
    summary = embed_to_store(model, "data/manifest.jsonl", "runs/emb")      # resumable, sharded
    index = build_index(summary.store, kind="auto", memory_budget="4G")
    index.save("runs/emb/index"); index = Index.load("runs/emb/index")
    hits = search(model, index, [("image", "cat.png"), ("text", "on grass")], weights=[1, 0.5], k=10,
                  modalities=["image", "video"])

Names are imported on first use (``anybind-search --help`` needs none of them).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_LAZY = {
    "EmbedSummary": "summary", "embed_to_store": "embed", "items_from_folder": "collection",
    "items_from_manifest": "collection",
    "Hit": "index", "Index": "index", "IndexParams": "index", "build_index": "index", "choose_kind": "index",
    "estimate_memory": "index", "exact_topk": "index",
    "as_queries": "search", "combine": "search", "contact_sheet": "search", "cross_modal_search": "search",
    "embed_queries": "search", "parse_query": "search", "search": "search",
    "EmbeddingStore": "store",
    "StoreWriter": "store_writer", "merge_stores": "store_writer", "write_store": "store_writer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anybind.retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """Importing the submodule ``anybind.retrieval.search`` must not hide the function ``search`` of the same name
    (the import system sets the package attribute to the submodule once it has run)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "search" and isinstance(value, types.ModuleType):
            value = value.search
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from .collection import items_from_folder, items_from_manifest
    from .embed import embed_to_store
    from .index import Hit, Index, IndexParams, build_index, choose_kind, estimate_memory, exact_topk
    from .search import (as_queries, combine, contact_sheet, cross_modal_search, embed_queries, parse_query,
                         search)
    from .store import EmbeddingStore
    from .store_writer import StoreWriter, merge_stores, write_store
    from .summary import EmbedSummary
