"""Writing embedding stores (the layout is in :mod:`.store`): :class:`StoreWriter` writes finished shards into a
store folder, one writer (or several cooperating ones) at a time; :func:`write_store` stores vectors already computed;
:func:`merge_stores` copies several stores into one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import CheckpointError
from ..io import WriterLock, atomic_write_bytes, atomic_write_json, check_owned_folder, clean_temp_files, sha256_file
from .files import jsonl_bytes, npy_bytes
from .store import DTYPES, STORE_FORMAT, STORE_VERSION, EmbeddingStore, Shard, load_shard, model_key, read_info

log = logging.getLogger(__name__)


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
        if info_path.exists() and (overwrite or read_info(info_path).get("rewriting")):
            # Only a folder anybind wrote as a store is emptied. It is marked first (one atomic write), so a kill
            # while its shards go leaves a store that refuses to open, never a mix of old and new rows; the next
            # writer finishes the emptying.
            atomic_write_json(info_path, {**read_info(info_path), "rewriting": True})
            shutil.rmtree(self.path / "shards", ignore_errors=True)
            (self.path / "errors.jsonl").unlink(missing_ok=True)
            info_path.unlink()
        if info_path.exists():
            info = read_info(info_path)
            if info["embed_dim"] != self.embed_dim:
                raise CheckpointError(f"store {self.path} holds {info['embed_dim']}-d vectors, cannot add {self.embed_dim}-d ones; "
                                      "use a new folder or overwrite=True")
            old, new = info.get("model") or {}, self.model
            if old and new and model_key(old) != model_key(new):
                raise CheckpointError(f"store {self.path} was embedded with another model ({model_key(old)}), not "
                                      f"{model_key(new)}; use a new folder or overwrite=True")
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
        shard = load_shard(marker)
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
        atomic_write_bytes(vec_path, npy_bytes(vectors.astype(self.dtype, copy=False)))
        atomic_write_bytes(meta_path, jsonl_bytes(metadata))
        marker = {
            "shard": name, "modality": modality, "count": len(vectors), "dtype": self.dtype,
            "planned": int(planned if planned is not None else len(vectors) + len(errors)),
            "inputs_sha256": inputs_sha256, "errors": [dict(e) for e in errors],
            "files": {"vectors": {"name": vec_path.name, "sha256": sha256_file(vec_path)},
                      "meta": {"name": meta_path.name, "sha256": sha256_file(meta_path)}},
        }
        atomic_write_json(self.marker_path(name), marker)
        return load_shard(self.marker_path(name))

    def shard_parts(self, name: str) -> list[Shard]:
        """The finished parts ``<name>.<first row>`` of a planned shard that was written in pieces (a time flush, an
        interruption), in row order."""
        parts = []
        for marker in (self.path / "shards").glob(f"{name}.*.done.json"):
            start = marker.name[len(name) + 1:-len(".done.json")]
            if start.isdigit():
                parts.append((int(start), load_shard(marker)))
        return [p for _, p in sorted(parts, key=lambda t: t[0])]

    def remove_shard(self, name: str) -> None:
        """Remove a finished shard this store wrote: its marker first (so it stops counting), then the files the
        marker lists."""
        marker = self.marker_path(name)
        if not marker.exists():
            return
        shard = load_shard(marker)
        marker.unlink()
        for path in (shard.vectors_path, shard.meta_path):
            if path.parent == self.path / "shards":
                path.unlink(missing_ok=True)

    def finalize(self) -> "EmbeddingStore":
        """Collect every shard's errors into ``errors.jsonl`` and return the store, opened."""
        store = EmbeddingStore.open(self.path, verify=False)
        atomic_write_bytes(self.path / "errors.jsonl", jsonl_bytes(store.errors))
        self.lock.release()
        return store

    def close(self) -> None:
        """Give up the folder's lock without collecting errors (a writer that stops early)."""
        self.lock.release()


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
    models = {model_key(s.model) for s in stores if s.model}
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
