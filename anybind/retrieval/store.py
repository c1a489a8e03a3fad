"""Embedding stores: a folder of finished shards that later steps (indexing, evaluation) read.

Layout of a store at ``out/``::

    out/store.json                        {"format": "anybind-store", "version": 1, "embed_dim": D, "model": {...}}
    out/shards/00000-image.npy            (n, D) float32 or float16 unit vectors
    out/shards/00000-image.jsonl          one JSON object per row: {"id", "modality", "source", ...extra}
    out/shards/00000-image.done.json      marker: counts, sha256 of both files, hash of the inputs, errors
    out/errors.jsonl                      every input that could not be read, one JSON object a line

A shard is finished exactly when its marker exists and the digests in it match the files; every file is
written atomically and the marker last, so an interrupted run leaves only unfinished shards behind, and a
resumed run redoes only those.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..io import WriterLock, atomic_write_bytes, atomic_write_json, check_owned_folder, clean_temp_files, sha256_file
from ..errors import CheckpointError

log = logging.getLogger(__name__)

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


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in rows).encode()


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        try:  # one parse of the whole file as an array: about twice as fast as a parse per line
            rows = json.loads("[" + ",".join(lines) + "]")
            if len(rows) == len(lines):
                return rows
        except json.JSONDecodeError:
            pass
        return [json.loads(line) for line in lines]  # names the damaged line
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"store file {path} could not be read: {exc}") from exc


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
        rows = _read_jsonl(self.meta_path)
        if len(rows) != self.count:
            raise CheckpointError(f"store shard file {self.meta_path} has {len(rows)} rows, its marker says {self.count}")
        return rows


class StoreWriter:
    """Writes finished shards into a store folder; the building block of :func:`embed_to_store` and merges."""

    def __init__(self, path: str | Path, embed_dim: int, *, dtype: str = "float32", model: Mapping[str, Any] | None = None,
                 overwrite: bool = False, shared: bool = False):
        """``shared=True``: one of several cooperating writers (the ranks of a distributed embedding)."""
        if dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        self.path = Path(path)
        self.embed_dim = int(embed_dim)
        self.dtype = dtype
        self.model = dict(model or {})
        info_path = self.path / "store.json"
        check_owned_folder(self.path, "store.json", "embedding store")
        self.lock = WriterLock(self.path, "embedding store", shared=shared).acquire()
        if not shared:  # alone in the folder: what a killed writer left half-written goes
            clean_temp_files(self.path)
            clean_temp_files(self.path / "shards")
        if info_path.exists() and (overwrite or _read_info(info_path).get("rewriting")):
            # Only a folder anybind wrote as a store is emptied. It is marked first (one atomic write), so a kill
            # while its shards go leaves a store that refuses to open, never a mix of old and new rows; the next
            # writer finishes the emptying.
            atomic_write_json(info_path, {**_read_info(info_path), "rewriting": True})
            shutil.rmtree(self.path / "shards", ignore_errors=True)
            (self.path / "errors.jsonl").unlink(missing_ok=True)
            info_path.unlink()
        if info_path.exists():
            info = _read_info(info_path)
            if info["embed_dim"] != self.embed_dim:
                raise CheckpointError(f"store {self.path} holds {info['embed_dim']}-d vectors, cannot add {self.embed_dim}-d ones; "
                                      "use a new folder or overwrite=True")
            old, new = info.get("model") or {}, self.model
            if old and new and _model_key(old) != _model_key(new):
                raise CheckpointError(f"store {self.path} was embedded with another model ({_model_key(old)}), not "
                                      f"{_model_key(new)}; use a new folder or overwrite=True")
        else:
            atomic_write_json(info_path, {"format": STORE_FORMAT, "version": STORE_VERSION, "embed_dim": self.embed_dim,
                                          "dtype": self.dtype, "model": self.model})
        (self.path / "shards").mkdir(parents=True, exist_ok=True)

    def marker_path(self, name: str) -> Path:
        return self.path / "shards" / f"{name}.done.json"

    def finished(self, name: str, digest: str | None = None, verify: bool = True) -> bool:
        """Whether shard ``name`` is finished (and was planned from inputs hashing to ``digest``)."""
        marker = self.marker_path(name)
        if not marker.exists():
            return False
        shard = _load_shard(marker)
        if digest is not None and shard.marker.get("inputs_sha256") not in (None, digest):
            raise CheckpointError(f"store {self.path} shard {name} was embedded from other inputs than this run plans; "
                                  "use a new output folder or overwrite=True")
        if verify:
            try:
                shard.verify()
            except CheckpointError as exc:
                log.warning("%s; the shard will be embedded again", exc)
                return False
        return True

    def write_shard(self, name: str, modality: str, vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]], *,
                    errors: Sequence[Mapping[str, Any]] = (), planned: int | None = None, inputs_sha256: str | None = None) -> Shard:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.embed_dim:
            raise ValueError(f"shard {name}: vectors must be (n, {self.embed_dim}), got {vectors.shape}")
        if len(metadata) != len(vectors):
            raise ValueError(f"shard {name}: {len(vectors)} vectors but {len(metadata)} metadata rows")
        shards = self.path / "shards"
        vec_path, meta_path = shards / f"{name}.npy", shards / f"{name}.jsonl"
        atomic_write_bytes(vec_path, _npy_bytes(vectors.astype(self.dtype, copy=False)))
        atomic_write_bytes(meta_path, _jsonl_bytes(metadata))
        marker = {
            "shard": name, "modality": modality, "count": len(vectors), "dtype": self.dtype,
            "planned": int(planned if planned is not None else len(vectors) + len(errors)),
            "inputs_sha256": inputs_sha256, "errors": [dict(e) for e in errors],
            "files": {"vectors": {"name": vec_path.name, "sha256": sha256_file(vec_path)},
                      "meta": {"name": meta_path.name, "sha256": sha256_file(meta_path)}},
        }
        atomic_write_json(self.marker_path(name), marker)
        return _load_shard(self.marker_path(name))

    def shard_parts(self, name: str) -> list[Shard]:
        """The finished parts ``<name>.<first row>`` of a planned shard that was written in pieces (a time flush, an
        interruption), in row order."""
        parts = []
        for marker in (self.path / "shards").glob(f"{name}.*.done.json"):
            start = marker.name[len(name) + 1:-len(".done.json")]
            if start.isdigit():
                parts.append((int(start), _load_shard(marker)))
        return [p for _, p in sorted(parts, key=lambda t: t[0])]

    def remove_shard(self, name: str) -> None:
        """Remove a finished shard this store wrote: its marker first (so it stops counting), then the files the
        marker lists."""
        marker = self.marker_path(name)
        if not marker.exists():
            return
        shard = _load_shard(marker)
        marker.unlink()
        for path in (shard.vectors_path, shard.meta_path):
            if path.parent == self.path / "shards":
                path.unlink(missing_ok=True)

    def finalize(self) -> "EmbeddingStore":
        """Collect every shard's errors into ``errors.jsonl`` and return the store, opened."""
        store = EmbeddingStore.open(self.path, verify=False)
        atomic_write_bytes(self.path / "errors.jsonl", _jsonl_bytes(store.errors))
        self.lock.release()
        return store

    def close(self) -> None:
        """Give up the folder's lock without collecting errors (a writer that stops early)."""
        self.lock.release()


def _model_key(model: Mapping[str, Any]) -> str:
    if model.get("sha256"):
        return f"sha256 {model['sha256'][:12]}"
    return json.dumps(model.get("encoders", model), sort_keys=True, default=str)


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"store manifest {path} could not be read: {exc}") from exc
    if info.get("format") != STORE_FORMAT:
        raise CheckpointError(f"{path} is not an anybind embedding store manifest (format={info.get('format')!r})")
    return info


def _load_shard(marker_path: Path) -> Shard:
    try:
        m = json.loads(marker_path.read_text())
        files = m["files"]
        return Shard(m["shard"], m["modality"], int(m["count"]), m.get("dtype", "float32"),
                     marker_path.parent / files["vectors"]["name"], marker_path.parent / files["meta"]["name"], m)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"store shard marker {marker_path} is damaged: {exc}") from exc


class EmbeddingStore:
    """Read access to a store written by :func:`anybind.retrieval.embed_to_store` (or :class:`StoreWriter`).

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
        info = _read_info(info_path)
        if info.get("rewriting"):
            raise CheckpointError(f"embedding store {path} was being rewritten (overwrite=True) when its writer "
                                  "stopped; its old rows are gone: embed into it again")
        shards = [_load_shard(p) for p in sorted((path / "shards").glob("*.done.json"))]
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


def write_store(path: str | Path, vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]], *, shard_size: int = 65536,
                dtype: str = "float32", model: Mapping[str, Any] | None = None, overwrite: bool = False) -> EmbeddingStore:
    """Write already computed vectors (rows of ``metadata`` each need ``id`` and ``modality``) as a store."""
    vectors = np.asarray(vectors)
    if len(metadata) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(metadata)} metadata rows")
    writer = StoreWriter(path, vectors.shape[1], dtype=dtype, model=model, overwrite=overwrite)
    start = _next_shard_number(writer.path)
    mods = np.array([str(r["modality"]) for r in metadata])
    n = start
    for m in dict.fromkeys(mods.tolist()):
        rows = np.flatnonzero(mods == m)
        for lo in range(0, len(rows), shard_size):
            take = rows[lo:lo + shard_size]
            writer.write_shard(f"{n:05d}-{m}", m, vectors[take], [metadata[i] for i in take])
            n += 1
    return writer.finalize()


def _next_shard_number(path: Path) -> int:
    nums = [int(p.name.split("-", 1)[0]) for p in (path / "shards").glob("*.done.json") if p.name.split("-", 1)[0].isdigit()]
    return max(nums) + 1 if nums else 0


def merge_stores(sources: Sequence[str | Path | EmbeddingStore], out: str | Path, *, overwrite: bool = False,
                 allow_different_models: bool = False) -> EmbeddingStore:
    """Copy the shards of several stores (same ``embed_dim``; same model unless allowed) into one new store."""
    stores = [s if isinstance(s, EmbeddingStore) else EmbeddingStore.open(s) for s in sources]
    if not stores:
        raise ValueError("merge_stores needs at least one store")
    dims = {s.embed_dim for s in stores}
    if len(dims) != 1:
        raise CheckpointError(f"cannot merge stores of different widths: { {str(s.path): s.embed_dim for s in stores} }")
    models = {_model_key(s.model) for s in stores if s.model}
    if len(models) > 1 and not allow_different_models:
        raise CheckpointError(f"stores were embedded with different models ({sorted(models)}); their vectors do not share "
                              "a space. Pass allow_different_models=True to merge anyway")
    out = Path(out)
    if any(out.resolve() == s.path.resolve() for s in stores):
        raise ValueError(f"merge output {out} must differ from its inputs")
    dtype = "float32" if any(sh.dtype == "float32" for s in stores for sh in s.shards) else "float16"
    writer = StoreWriter(out, dims.pop(), dtype=dtype, model=stores[0].model, overwrite=overwrite)
    n = _next_shard_number(writer.path)
    for store in stores:
        for shard, vecs, meta in store.iter_shards():
            writer.write_shard(f"{n:05d}-{shard.modality}", shard.modality, np.asarray(vecs), meta, errors=shard.errors,
                               planned=shard.marker.get("planned"), inputs_sha256=shard.marker.get("inputs_sha256"))
            n += 1
    return writer.finalize()
