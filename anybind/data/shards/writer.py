"""Write a manifest or a folder as WebDataset tar shards plus a ``shards.json`` index (``anybind-shard``).

Each sample is one key in a tar: ``<key>.json`` holds its id, label, split and other manifest keys, and one member
per modality holds that modality's original file bytes, named ``<key>.<modality>.<ext>`` (``000000042.image.png``,
``000000042.text.txt`` for text). Training decodes those bytes with the same readers and transforms a manifest
uses (:mod:`anybind.data.shards.stream`), so a sample gives the same tensors either way.

The tars are written with the ``webdataset`` library's :class:`~webdataset.TarWriter`: the files are plain POSIX
tars that any WebDataset reader (``webdataset``, ``wids``, ``tarp``, ``tar``) understands, so shards can be streamed
from object stores or ``pipe:`` commands without an anybind-specific format. The writer rotates shards itself
(rather than with ``ShardWriter``) so that each shard is written under a temporary name and renamed only once it is
complete and hashed.

Atomicity and resume: a shard becomes visible (renamed to ``shard-000007.tar``) only when complete; after each
one, ``shards.partial.json`` records the shards done and how far into the input they reach. A killed run, started
again with the same command, keeps those shards and continues after them. ``shards.json`` is written last; its
presence means the set is complete.

A bad sample (missing or undecodable file) does not end the run: the failing modality is left out of the sample
(the sample is dropped when nothing is left), counted, and listed in ``shards.json`` under ``errors``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ...io import atomic_write_json, sha256_file
from ...errors import InputError
from ...modality import get_modality, modality_for_path

log = logging.getLogger("anybind.data.shards")

INDEX_NAME = "shards.json"
PARTIAL_NAME = "shards.partial.json"
FORMAT = "anybind-webdataset-shards"
FORMAT_VERSION = 1
MAX_LISTED_ERRORS = 200
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass
class SourceSample:
    """One sample to shard: modality -> file path (or text), plus metadata for ``<key>.json``."""

    id: str
    items: dict[str, str]
    meta: dict = field(default_factory=dict)


def samples_from_manifest(path: str | Path, *, split: str | None = None,
                          modalities: Sequence[str] | None = None) -> list[SourceSample]:
    from ..manifest import load_manifest

    manifest = load_manifest(path, split=split, modalities=modalities)
    out = []
    for s in manifest:
        meta = {k: v for k, v in (("label", s.label), ("split", s.split)) if v is not None}
        meta.update(s.extra)
        out.append(SourceSample(s.id, dict(s.items), meta))
    return out


def samples_from_folder(folder: str | Path, *, modalities: Sequence[str] | None = None) -> list[SourceSample]:
    """Files with the same path minus extension form one sample (``a/dog.png`` + ``a/dog.wav``: id ``a/dog``)."""
    folder = Path(folder)
    groups: dict[str, dict[str, str]] = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        try:
            m = modality_for_path(p)
        except InputError:
            continue
        if modalities is not None and m not in modalities:
            continue
        sid = p.relative_to(folder).with_suffix("").as_posix()
        items = groups.setdefault(sid, {})
        if m in items:
            raise InputError(p, m, f"sample {sid!r} already has a {m} file ({items[m]}); keep one per sample")
        items[m] = str(p)
    return [SourceSample(sid, items) for sid, items in groups.items()]


def load_source(source: str | Path, *, split: str | None = None,
                modalities: Sequence[str] | None = None) -> list[SourceSample]:
    p = Path(source).expanduser()
    if p.is_dir():
        return samples_from_folder(p, modalities=modalities)
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return samples_from_manifest(p, split=split, modalities=modalities)
    if not p.exists():
        raise InputError(p, "shards", "input does not exist (give a manifest .jsonl/.csv or a folder)")
    raise InputError(p, "shards", f"is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")


def encode_sample(key: str, sample: SourceSample, *, check: bool = True) -> tuple[dict, list[tuple[str, str, str]]]:
    """-> (the tar members of one sample, errors as (sample id, modality, message)). Runs the reader when ``check``."""
    members: dict[str, bytes] = {}
    errors = []
    for m, value in sample.items.items():
        spec = get_modality(m)
        try:
            if spec.text_like:  # stored as the text itself (a .txt file through its reader), as the manifest path sees it
                members[f"{m}.txt"] = (spec.read(value) if spec.is_path(value) else value).encode("utf-8")
                continue
            path = Path(value)
            if check:
                raw = spec.read(path)  # raises InputError naming the file when it cannot be decoded
                close = getattr(raw, "close", None)
                if callable(close):
                    close()
            elif not path.is_file():
                raise InputError(path, m, "file does not exist")
            ext = path.suffix.lower().lstrip(".") or "bin"
            members[f"{m}.{ext}"] = path.read_bytes()
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, never fatal
            msg = str(exc) if isinstance(exc, InputError) else f"{m} input {value!r}: {type(exc).__name__}: {exc}"
            errors.append((sample.id, m, msg))
    if members:
        members["json"] = json.dumps({"id": sample.id, **sample.meta}, ensure_ascii=False, default=str).encode()
        members["__key__"] = key
    return members, errors


class _Shard:
    """One tar being written under a temporary name; :meth:`finish` hashes it and renames it into place."""

    def __init__(self, out: Path, number: int):
        import webdataset as wds

        self.name = f"shard-{number:06d}.tar"
        self.final = out / self.name
        self.tmp = out / f".{self.name}.tmp"
        self.file = open(self.tmp, "wb")
        self.tar = wds.TarWriter(self.file, encoder=False, mtime=0.0)  # fixed mtime: same input, same bytes
        self.samples, self.counts = 0, {}

    def write(self, members: dict) -> None:
        self.tar.write(members)
        self.samples += 1
        for k in members:
            if k not in ("__key__", "json"):
                m = k.split(".", 1)[0]
                self.counts[m] = self.counts.get(m, 0) + 1

    @property
    def size(self) -> int:
        return self.file.tell()

    def finish(self) -> dict:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        digest = sha256_file(self.tmp)
        os.replace(self.tmp, self.final)
        return {"name": self.name, "samples": self.samples, "modalities": dict(sorted(self.counts.items())),
                "bytes": self.final.stat().st_size, "sha256": digest}


def write_shards(source: str | Path, out: str | Path, *, max_size: int = 256 * 2**20, max_count: int = 10_000,
                 modalities: Sequence[str] | None = None, split: str | None = None, check: bool = True,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Shard ``source`` (manifest or folder) into ``out``; returns the index also written to ``out/shards.json``.

    A shard closes once it holds ``max_count`` samples or ``max_size`` bytes (a sample is never split, so a shard
    may pass ``max_size`` by one sample). Rerunning after a kill resumes (see the module docstring); rerunning
    after completion returns the existing index unless ``overwrite``.
    """
    from ... import __version__

    if max_count < 1 or max_size < 1:
        raise ValueError(f"max_count and max_size must be >= 1, got {max_count} and {max_size}")
    out = Path(out).expanduser()
    index_path, partial_path = out / INDEX_NAME, out / PARTIAL_NAME
    if index_path.exists() and not overwrite:
        log.info("%s exists: the shard set is complete (overwrite=true rewrites it)", index_path)
        return json.loads(index_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in [*out.glob("shard-*.tar"), index_path, partial_path]:
            p.unlink(missing_ok=True)
    for p in out.glob(".shard-*.tar.tmp"):  # a shard a killed run left half written
        p.unlink()
    samples = load_source(source, split=split, modalities=modalities)
    state = {"shards": [], "next_sample": 0, "skipped": 0, "errors": []}
    if partial_path.exists():
        prior = json.loads(partial_path.read_text())
        if prior.get("source") == str(Path(source).resolve()) and prior.get("total_input") == len(samples) \
                and all((out / s["name"]).is_file() for s in prior["shards"]):
            state = {k: prior[k] for k in state}
            log.info("resuming: %d shards done, %d of %d samples handled", len(state["shards"]),
                     state["next_sample"], len(samples))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(samples), initial=state["next_sample"], desc="shard", unit="sample", disable=None)
    t0 = time.perf_counter()
    shard = None

    def close_shard(next_sample: int) -> None:
        state["shards"].append(shard.finish())
        state["next_sample"] = next_sample
        atomic_write_json(partial_path, {"source": str(Path(source).resolve()), "total_input": len(samples), **state})

    try:
        for i in range(state["next_sample"], len(samples)):
            members, errors = encode_sample(f"{i:09d}", samples[i], check=check)
            for e in errors:
                if len(state["errors"]) < MAX_LISTED_ERRORS:
                    state["errors"].append({"id": e[0], "modality": e[1], "error": e[2]})
                log.warning("skipped %s of sample %r: %s", e[1], e[0], e[2])
            state["skipped"] += len(errors)
            if members:
                if shard is None:
                    shard = _Shard(out, len(state["shards"]))
                shard.write(members)
                if shard.samples >= max_count or shard.size >= max_size:
                    close_shard(i + 1)
                    shard = None
            if bar is not None:
                bar.update(1)
        if shard is not None:
            close_shard(len(samples))
            shard = None
    finally:
        if bar is not None:
            bar.close()
        if shard is not None:  # interrupted: drop the incomplete shard, keep the finished ones
            shard.file.close()
            shard.tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for s in state["shards"]:
        for m, n in s["modalities"].items():
            counts[m] = counts.get(m, 0) + n
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "anybind_version": __version__,
        "source": str(Path(source).resolve()), "encoding": "raw", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "samples": sum(s["samples"] for s in state["shards"]), "input_samples": len(samples),
        "modalities": sorted(counts), "counts": dict(sorted(counts.items())),
        "skipped": state["skipped"], "errors": state["errors"], "shards": state["shards"],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(index_path, index)
    partial_path.unlink(missing_ok=True)
    return index


def describe(index: dict) -> str:
    lines = [f"{len(index['shards'])} shards, {index['samples']} samples ({index['counts']}), "
             f"{sum(s['bytes'] for s in index['shards']) / 2**20:.1f} MiB"]
    if index["skipped"]:
        lines.append(f"{index['skipped']} bad inputs skipped:")
        lines += [f"  {e['id']} ({e['modality']}): {e['error']}" for e in index["errors"][:10]]
    return "\n".join(lines)

