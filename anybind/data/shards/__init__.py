"""WebDataset shards: ``anybind-shard`` writes them (:mod:`.writer`), training streams them (:mod:`.stream`).

See docs/shards.md.
"""

from .writer import INDEX_NAME, load_source, write_shards

__all__ = ["INDEX_NAME", "load_source", "write_shards"]
