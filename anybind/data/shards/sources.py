"""Where streamed training samples come from: shard folders, WebDataset URL lists, or manifests.

A :class:`Source` is a list of *units* (a shard URL, or a run of manifest samples) that are split among ranks and
DataLoader workers, plus a way to read one unit as *raw samples*: dicts shaped like a WebDataset sample::

    {"__key__": "000000042", "json": b'{"id": ..., "label": ...}', "image.png": b"...", "text.txt": b"...",
     "__url__": "where it came from"}

Manifest sources hold :class:`~pathlib.Path` values instead of bytes (the files are read where they lie), so a
mixture can combine sharded and loose corpora. Shards are opened with ``webdataset.gopen``, so any URL the
``webdataset`` library opens works (local paths, ``pipe:`` commands, ``http(s)://``, ``gs://`` ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ...errors import InputError
from .writer import INDEX_NAME, SourceSample, samples_from_manifest

ErrorSink = Callable[[str, str, str], None]  # (where, modality, message)


@dataclass
class Source:
    name: str
    units: list[Any]  # shard URLs, or manifest sample positions (each sample is its own unit)
    samples: int  # samples per pass over every unit (sets the epoch length)
    weight: float = 1.0
    manifest: list[SourceSample] | None = field(default=None, repr=False)

    def read(self, unit: Any, on_error: ErrorSink) -> Iterator[dict]:
        if self.manifest is None:
            yield from iter_tar(unit, on_error)
            return
        i = int(unit)
        s = self.manifest[i]
        raw = {"__key__": f"{i:09d}", "__url__": self.name, "json": json.dumps({"id": s.id, **s.meta}, default=str).encode()}
        for m, value in s.items.items():
            if _looks_like_path(m, value):
                raw[f"{m}.{_ext(value)}"] = Path(value)
            else:  # the text itself
                raw[f"{m}.txt"] = value.encode("utf-8")
        yield raw


def _looks_like_path(modality: str, value: str) -> bool:
    from ...modality import get_modality

    return get_modality(modality).is_path(value)


def _ext(value: str) -> str:
    return Path(value).suffix.lower().lstrip(".") or "bin"


def read_index(folder: str | Path) -> dict:
    path = Path(folder).expanduser() / INDEX_NAME
    if not path.is_file():
        hint = " (anybind-shard has not finished there: rerun it to resume)" if (path.parent / "shards.partial.json").exists() else ""
        raise InputError(path, "shards", f"no shard index; write one with anybind-shard input=... out={folder}{hint}")
    return json.loads(path.read_text())


def source_from_config(entry: Mapping[str, Any], *, default_name: str = "data") -> Source:
    """One corpus: ``{shards: folder}`` | ``{urls: "a/{000..127}.tar", samples: N}`` | ``{manifest: path}``,
    with optional ``name``, ``weight`` (mixtures), ``samples`` (overrides the count) and ``split`` (manifests)."""
    kinds = [k for k in ("shards", "urls", "manifest") if entry.get(k)]
    if len(kinds) != 1:
        raise ValueError(f"a data source gives exactly one of shards=, urls= or manifest=, got {dict(entry)}")
    kind = kinds[0]
    weight = float(entry.get("weight", 1.0))
    if weight < 0:
        raise ValueError(f"data source {entry.get('name') or entry[kind]!r}: weight must be >= 0, got {weight}")
    if kind == "shards":
        folder = Path(entry["shards"]).expanduser()
        index = read_index(folder)
        urls = [str(folder / s["name"]) for s in index["shards"]]
        samples = int(entry.get("samples") or index["samples"])
        name = entry.get("name") or folder.name
        return Source(name, urls, samples, weight)
    if kind == "urls":
        from webdataset.shardlists import expand_urls

        urls = list(expand_urls(entry["urls"])) if isinstance(entry["urls"], str) else [str(u) for u in entry["urls"]]
        if not entry.get("samples"):
            raise ValueError(f"urls={entry['urls']!r}: give the sample count too (data.epoch_samples=N, or samples: N in "
                             f"a mixture entry); a shard folder's shards.json has it")
        return Source(entry.get("name") or default_name, urls, int(entry["samples"]), weight)
    samples = samples_from_manifest(entry["manifest"], split=entry.get("split"))
    return Source(entry.get("name") or Path(entry["manifest"]).stem, list(range(len(samples))),
                  int(entry.get("samples") or len(samples)),
                  weight, manifest=samples)


def _damaged_id(url: str, member: str | None, current: dict | None) -> str:
    """The id to report for the sample a damaged tar cut off: its ``<key>.json`` id when that member was read,
    else its key (the shard's name when not even a member header could be read)."""
    if current is not None and "json" in current:
        try:
            return str(json.loads(current["json"])["id"])
        except (ValueError, KeyError, TypeError):
            pass
    if member:
        folder, _, base = member.rpartition("/")
        key = base.partition(".")[0]
        return f"{folder}/{key}" if folder else key
    return url


def iter_tar(url: str, on_error: ErrorSink) -> Iterator[dict]:
    """The samples of one WebDataset tar, grouped by key. A damaged tar (truncated member, bad header) ends that
    shard's stream: the samples before it are kept, the one being read is dropped and reported by its id (the
    error's modality is ``"shard"``; the message names the shard and member)."""
    import tarfile

    import webdataset as wds

    current: dict | None = None
    member, failure = None, None
    try:
        stream = wds.gopen(url, "rb")
    except Exception as exc:  # noqa: BLE001
        on_error(url, "shard", f"could not be opened ({type(exc).__name__}: {exc})")
        return
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
        for info in tar:
            member = info.name
            if not info.isreg() or member.rpartition("/")[2].startswith("."):
                continue
            folder, _, base = member.rpartition("/")
            key, _, suffix = base.partition(".")
            key = f"{folder}/{key}" if folder else key
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            data = tar.extractfile(info).read()
            tar.members = []  # a streamed tar keeps no index: memory stays flat
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[suffix.lower()] = data
    except Exception as exc:  # noqa: BLE001 - truncated data or header: the stream cannot be resynchronised
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    if failure is not None:
        on_error(_damaged_id(url, member, current), "shard",
                 f"{url}" + (f" (member {member})" if member else "") +
                 f": damaged tar; the sample being read and the rest of this shard are skipped: {failure}")
        return
    if current is not None:
        yield current
