"""Embedding stores: a folder of finished shards that later steps (indexing, evaluation) read.

Layout of a store at ``out/``::

    out/store.json                        {"format": "anybind-store", "version": 1, "embed_dim": D, "model": {...}}
    out/shards/00000-image.npy            (n, D) float32 or float16 unit vectors
    out/shards/00000-image.jsonl          one JSON object per row: {"id", "modality", "source", ...extra}
    out/shards/00000-image.done.json      marker: counts, sha256 of both files, hash of the inputs, errors
    out/errors.jsonl                      every input that could not be read, one JSON object a line

A shard is finished exactly when its marker exists and the digests in it match the files; every file is
written atomically and the marker last, so an interrupted run leaves only unfinished shards behind, and a
resumed run redoes only those. This module reads stores; :mod:`.store_writer` writes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from ..errors import CheckpointError
from ..io import sha256_file
from .files import read_jsonl, read_manifest

STORE_FORMAT = "anybind-store"
STORE_VERSION = 1
DTYPES = ("float32", "float16")


def inputs_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """A digest of what a shard was planned from (ids, modalities, sources), to recognise it on resume."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.get("id"), r.get("modality"), r.get("source")], default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class Shard:
    """One finished shard (as described by its marker)."""

    name: str
    modality: str
    count: int
    dtype: str
    vectors_path: Path
    meta_path: Path
    marker: dict = field(repr=False)

    @property
    def errors(self) -> list[dict]:
        return list(self.marker.get("errors", []))

    def verify(self) -> None:
        """Raise :class:`CheckpointError` naming the file if a shard file is missing or damaged."""
        for key, path in (("vectors", self.vectors_path), ("meta", self.meta_path)):
            if not path.exists():
                raise CheckpointError(f"store shard file {path} is missing (listed in {self.name}.done.json)")
            if sha256_file(path) != self.marker["files"][key]["sha256"]:
                raise CheckpointError(f"store shard file {path} is damaged: its sha256 does not match {self.name}.done.json")

    def load_vectors(self, mmap: bool = True) -> np.ndarray:
        try:
            arr = np.load(self.vectors_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"store shard file {self.vectors_path} could not be read: {exc}") from exc
        if arr.ndim != 2 or arr.shape[0] != self.count:
            raise CheckpointError(f"store shard file {self.vectors_path} has shape {arr.shape}, its marker says {self.count} rows")
        return arr

    def load_metadata(self) -> list[dict]:
        rows = read_jsonl(self.meta_path)
        if len(rows) != self.count:
            raise CheckpointError(f"store shard file {self.meta_path} has {len(rows)} rows, its marker says {self.count}")
        return rows


def model_key(model: Mapping[str, Any]) -> str:
    """How two stores (or a store and a writer) tell whether the same model made their vectors."""
    if model.get("sha256"):
        return f"sha256 {model['sha256'][:12]}"
    return json.dumps(model.get("encoders", model), sort_keys=True, default=str)


def read_info(path: Path) -> dict:
    """A store's ``store.json``, checked to be one."""
    return read_manifest(path, STORE_FORMAT, label="store", kind="embedding store")


def load_shard(marker_path: Path) -> Shard:
    """The shard a ``<name>.done.json`` marker describes (its files are not checked: :meth:`Shard.verify`)."""
    try:
        m = json.loads(marker_path.read_text())
        files = m["files"]
        return Shard(m["shard"], m["modality"], int(m["count"]), m.get("dtype", "float32"),
                     marker_path.parent / files["vectors"]["name"], marker_path.parent / files["meta"]["name"], m)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"store shard marker {marker_path} is damaged: {exc}") from exc


class EmbeddingStore:
    """Read access to a store written by :func:`anybind.retrieval.embed_to_store` (or
    :class:`~anybind.retrieval.store_writer.StoreWriter`).

    Rows are in shard order. ``vectors()`` returns float32 ``(n, D)``; ``metadata()`` the row dicts
    (``id``, ``modality``, ``source`` and whatever the input carried, e.g. ``label`` or ``split``).
    """

    def __init__(self, path: Path, info: dict, shards: list[Shard]):
        self.path, self.info, self.shards = path, info, shards
        self._meta: list[dict] | None = None

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> "EmbeddingStore":
        """Open a store; with ``verify`` every shard's sha256 is checked (a damaged file raises, naming it)."""
        path = Path(path)
        info_path = path / "store.json"
        if not info_path.exists():
            raise CheckpointError(f"{path} is not an embedding store: {info_path.name} is missing")
        info = read_info(info_path)
        if info.get("rewriting"):
            raise CheckpointError(f"embedding store {path} was being rewritten (overwrite=True) when its writer "
                                  "stopped; its old rows are gone: embed into it again")
        shards = [load_shard(p) for p in sorted((path / "shards").glob("*.done.json"))]
        if verify:
            for s in shards:
                s.verify()
        return cls(path, info, shards)

    @property
    def embed_dim(self) -> int:
        return int(self.info["embed_dim"])

    @property
    def model(self) -> dict:
        return dict(self.info.get("model") or {})

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, rows={len(self)}, dim={self.embed_dim}, modalities={self.modality_counts()})"

    def modality_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.shards:
            counts[s.modality] = counts.get(s.modality, 0) + s.count
        return counts

    @property
    def errors(self) -> list[dict]:
        return [e for s in self.shards for e in s.errors]

    def _select(self, modalities: Iterable[str] | None) -> list[Shard]:
        if modalities is None:
            return list(self.shards)
        wanted = {modalities} if isinstance(modalities, str) else set(modalities)
        return [s for s in self.shards if s.modality in wanted]

    def vectors(self, modalities: Iterable[str] | None = None) -> np.ndarray:
        shards = self._select(modalities)
        out = np.empty((sum(s.count for s in shards), self.embed_dim), dtype=np.float32)
        at = 0
        for s in shards:
            out[at:at + s.count] = s.load_vectors()
            at += s.count
        return out

    def metadata(self, modalities: Iterable[str] | None = None) -> list[dict]:
        return [row for s in self._select(modalities) for row in s.load_metadata()]

    def iter_shards(self, modalities: Iterable[str] | None = None) -> Iterator[tuple[Shard, np.ndarray, list[dict]]]:
        for s in self._select(modalities):
            yield s, s.load_vectors(), s.load_metadata()

    def by_modality(self) -> dict[str, tuple[np.ndarray, list[dict]]]:
        """``{modality: (float32 vectors, metadata rows)}``."""
        return {m: (self.vectors([m]), self.metadata([m])) for m in self.modality_counts()}
