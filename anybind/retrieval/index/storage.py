"""Saved indexes: a folder of content-addressed data files and ``index.json`` (written last, with every file's sha256).

An interrupted save leaves the previous manifest and every file it lists untouched; only files an earlier save of
this index listed are ever removed; a folder holding anything else is refused (see :mod:`anybind.io`), and one
writer at a time holds the folder's lock. ``ivfpq_disk`` parts add their re-ranking vectors, one ``.npy`` file
per segment, which are moved (not copied) into the folder when the build wrote them on the same disk and are
read from there again on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ...errors import CheckpointError
from ...io import WriterLock, atomic_write_json, check_owned_folder, clean_temp_files, sha256_file
from ..files import read_manifest
from . import backend
from .parts import Part, save_npy
from .rows import read_jsonl, write_jsonl

INDEX_FORMAT = "anybind-index"
INDEX_VERSION = 1       # indexes of the in-memory kinds only (readable by every anybind release)
DISK_INDEX_VERSION = 2  # with an ivfpq_disk part (its "vectors" segments)


JOURNAL_NAME = ".index.pending.json"  # the data files a save is writing, until its index.json lists them


def save_index(index, path: str | Path) -> Path:
    """Write ``index`` to the folder ``path`` (see the module docstring).

    A journal names every data file before it takes its name, so a save killed before its ``index.json`` leaves
    nothing the next save cannot recognise and remove; earlier files the new manifest drops are removed only after
    it is committed.
    """
    path = Path(path)
    # a first save killed before its index.json left only files its journal names: the folder is still ours
    check_owned_folder(path, "index.json", "index", allowed={JOURNAL_NAME, *claimed_files(path / JOURNAL_NAME)})
    with WriterLock(path, "index"):
        clean_temp_files(path)
        previous = listed_files(path / "index.json")
        journal = path / JOURNAL_NAME
        drop_uncommitted(path, journal, previous)  # data files of a save killed before its index.json
        claimed: list[str] = []

        def claim(name: str) -> None:  # noted before the file takes its name, so a killed save leaves no orphan
            claimed.append(name)
            atomic_write_json(journal, {"files": claimed})

        def addressed(stem: str, ext: str, write) -> tuple[str, str]:
            return write_addressed(path, stem, ext, write, claim)

        names = {"metadata": addressed("metadata", "jsonl", lambda p: write_jsonl(p, index.metadata))}
        segments: dict[str, list[dict]] = {}
        for m, part in index.parts.items():
            names[f"{m}.rows"] = addressed(f"{m}.rows", "npy", lambda p, r=part.rows: save_npy(p, r))
            names[m] = addressed(f"{m}.{part.kind}", "npy" if part.backend == "torch" else "faiss", part.write)
            if part.vectors is not None:
                segments[m] = part.vectors.save_into(path, f"{m}.vectors")
                for seg in segments[m]:
                    claim(seg["name"])
        entry = lambda key: {"name": names[key][0], "sha256": names[key][1]}  # noqa: E731
        parts = []
        for m, p in index.parts.items():
            e = {"modality": m, "kind": p.kind, "backend": p.backend, "count": len(p), "settings": p.settings,
                 "rows": entry(f"{m}.rows"), "data": entry(m)}
            if m in segments:
                e["vectors"] = segments[m]
            parts.append(e)
        manifest = {"format": INDEX_FORMAT, "version": DISK_INDEX_VERSION if segments else INDEX_VERSION,
                    "embed_dim": index.embed_dim, "metric": "inner_product", "count": len(index), "info": index.info,
                    "parts": parts, "metadata": entry("metadata")}
        listed = {n for n, _ in names.values()} | {s["name"] for segs in segments.values() for s in segs}
        # the earlier save's files the new manifest no longer lists: noted, then removed once it is committed
        atomic_write_json(journal, {"files": claimed, "drop": sorted(previous - listed)})
        atomic_write_json(path / "index.json", manifest)  # the commit
        for name in previous - listed:
            (path / name).unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
    return path


def claimed_files(journal: Path) -> set[str]:
    """The plain file names an index save's journal names: the files it wrote and the earlier files it was about to
    remove (none when there is no readable journal). Those the manifest lists are never removed."""
    try:
        entry = json.loads(journal.read_text())
        claimed = [*(entry.get("files") or []), *(entry.get("drop") or [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in map(str, claimed) if Path(n).name == n and n not in ("index.json", JOURNAL_NAME, ".anybind.lock")}


def drop_uncommitted(folder: Path, journal: Path, listed: set[str]) -> None:
    """Remove the files an interrupted save named in its journal that the manifest does not list."""
    for name in claimed_files(journal) - listed:
        (folder / name).unlink(missing_ok=True)
    journal.unlink(missing_ok=True)


def load_index(path: str | Path, *, verify: bool = True):
    """``(embed_dim, parts, metadata, info)`` of a saved index; a missing or damaged file raises naming it."""
    path = Path(path)
    mpath = path / "index.json"
    if not mpath.exists():
        raise CheckpointError(f"{path} is not a saved index: {mpath.name} is missing")
    manifest = read_manifest(mpath, INDEX_FORMAT, label="index", kind="index", unreadable="is damaged")
    if int(manifest.get("version", 1)) > DISK_INDEX_VERSION:
        raise CheckpointError(f"{mpath} is index format version {manifest['version']}; this anybind reads up to "
                              f"{DISK_INDEX_VERSION} (upgrade anybind)")

    def checked(entry: dict) -> Path:
        f = path / entry["name"]
        if not f.exists():
            raise CheckpointError(f"index file {f} is missing (listed in {mpath})")
        if verify and sha256_file(f) != entry["sha256"]:
            raise CheckpointError(f"index file {f} is damaged: its sha256 does not match {mpath}")
        return f

    metadata = read_jsonl(checked(manifest["metadata"]), manifest.get("count"))
    d = int(manifest["embed_dim"])
    parts = {}
    for e in manifest["parts"]:
        rows = np.load(checked(e["rows"]), allow_pickle=False)
        f = checked(e["data"])
        try:
            if e["backend"] == "torch":
                import torch

                impl = torch.from_numpy(np.load(f, allow_pickle=False))
            else:
                faiss = backend.import_faiss()
                if faiss is None:
                    raise CheckpointError(f"index file {f} is a faiss index; install faiss-cpu to load it")
                impl = faiss.read_index(str(f))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"index file {f} could not be read: {exc}") from exc
        vectors = None
        if e.get("vectors") is not None:
            from .vectorfile import DiskVectors

            vectors = DiskVectors.load([(checked(s), s) for s in e["vectors"]], d)
        part = Part(e["modality"], e["kind"], e["backend"], rows, impl, d, e.get("settings", {}), vectors)
        part.apply_settings()
        if len(part) != e["count"] or (part.backend == "faiss" and impl.ntotal != len(part)) or (
                vectors is not None and len(vectors) != len(part)):
            held = getattr(impl, "ntotal", len(impl)) if vectors is None else f"{impl.ntotal} codes and {len(vectors)}"
            raise CheckpointError(f"index file {f} holds {held} vectors, {mpath} says {e['count']}")
        parts[e["modality"]] = part
    if sum(len(p) for p in parts.values()) != len(metadata):
        raise CheckpointError(f"index {path}: {len(metadata)} metadata rows but {sum(len(p) for p in parts.values())} vectors")
    return d, parts, metadata, manifest.get("info")


def listed_files(manifest_path: Path) -> set[str]:
    """Names of the data files an index manifest lists (plain names inside its folder only)."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return set()
    entries = [manifest.get("metadata") or {}]
    for part in manifest.get("parts") or []:
        entries += [part.get("rows") or {}, part.get("data") or {}]
        entries += [s for s in part.get("vectors") or [] if isinstance(s, dict)]
    names = {str(e.get("name")) for e in entries if isinstance(e, dict) and e.get("name")}
    return {n for n in names if Path(n).name == n and n not in ("index.json", ".anybind.lock")}


def write_addressed(folder: Path, stem: str, ext: str, write, claim=None) -> tuple[str, str]:
    """``write(tmp_path)``, fsync, ``claim(name)``, then rename to ``<stem>.<sha256[:12]>.<ext>``; returns
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
