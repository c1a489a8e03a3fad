"""Manifests: a dataset described by one JSONL (or CSV) file, one sample per line.

Each line has one key per modality (``image``, ``audio``, ``points`` ...) holding a file path relative to the
manifest (absolute paths work too), or for ``text`` the text itself (a value ending in ``.txt`` that names an
existing file next to the manifest is read as a file). Optional keys: ``id`` (unique; default: the line's sample
number), ``label`` (class name; also the default retrieval match key), ``split`` (``train`` / ``val`` / ``test``).
Any other key is kept in ``Sample.extra`` (usable as a match key). A sample may lack any modality; empty values
and ``null`` mean "absent".

Example line::

    {"id": "dog-01", "image": "img/dog-01.png", "audio": "wav/dog-01.wav", "text": "a dog barking", "label": "dog"}
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..errors import InputError
from ..modality import get_modality, list_modalities

RESERVED = ("id", "label", "split")


@dataclass
class Sample:
    """One manifest row. ``items`` maps modality -> absolute path (as ``str``) or, for text, the text itself."""

    index: int
    id: str
    items: dict[str, str]
    label: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def key(self, match_key: str | None = None) -> str:
        """The retrieval match key: ``match_key``'s value when given, else the label, else the id."""
        if match_key in (None, "auto"):
            return self.label if self.label is not None else self.id
        if match_key == "id":
            return self.id
        if match_key == "label":
            if self.label is None:
                raise KeyError(f"sample {self.id!r} has no label to match on")
            return self.label
        if match_key not in self.extra:
            raise KeyError(f"sample {self.id!r} has no key {match_key!r} to match on (has {sorted(self.extra)})")
        return str(self.extra[match_key])


@dataclass
class Manifest:
    path: Path
    samples: list[Sample]

    @property
    def root(self) -> Path:
        return self.path.parent

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def modalities(self) -> list[str]:
        """Modalities present in at least one sample, sorted."""
        return sorted({m for s in self.samples for m in s.items})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            for m in s.items:
                out[m] = out.get(m, 0) + 1
        return dict(sorted(out.items()))

    def indices_with(self, *modalities: str) -> list[int]:
        """Positions of the samples that have every one of ``modalities``."""
        return [i for i, s in enumerate(self.samples) if all(m in s.items for m in modalities)]

    def has_splits(self) -> bool:
        return any(s.split is not None for s in self.samples)

    def select(self, split: str | None = None, *, limit: int | None = None) -> "Manifest":
        """Samples of ``split`` (all samples when ``split`` is None or when no sample declares a split).

        Positions are renumbered; ``limit`` keeps the first ``limit`` samples.
        """
        chosen = self.samples
        if split is not None and self.has_splits():
            chosen = [s for s in chosen if s.split == split]
        if limit is not None:
            chosen = chosen[:limit]
        renumbered = [Sample(i, s.id, s.items, s.label, s.split, s.extra, s.line) for i, s in enumerate(chosen)]
        return Manifest(self.path, renumbered)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _resolve_item(root: Path, modality: str, value: Any, where: str, root_only: bool = False) -> str:
    if not isinstance(value, str):
        raise InputError(where, modality, f"expected a string (a path, or the text itself), found {type(value).__name__}")
    if get_modality(modality).text_like:
        if value.lower().endswith(".txt") and "\n" not in value and (root / value).is_file():
            if root_only:
                check_inside(root, value, modality=modality, where=where)
            return str((root / value).resolve())
        return value
    if root_only:
        check_inside(root, value, modality=modality, where=where)
        return str(root / value)
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p))


def check_inside(root: Path, value: str, *, modality: str, where: str | Path) -> None:
    """``root_only``: ``value`` must be a relative path that stays inside ``root``, symlinks followed; else an
    :class:`InputError` naming ``where`` (a manifest line, or the file)."""
    p = Path(value)
    if p.is_absolute() or value.startswith("~") or p.drive:
        raise InputError(where, modality, f"path {value!r} is absolute; with root_only every path must be relative "
                                          f"to the manifest's folder {root}")
    if ".." in p.parts:
        raise InputError(where, modality, f"path {value!r} climbs out with '..'; with root_only every path must stay "
                                          f"inside the manifest's folder {root}")
    real_root = root.resolve()
    target = (root / p).resolve()  # follows every symlink on the way
    if target != real_root and real_root not in target.parents:
        raise InputError(where, modality, f"path {value!r} leads through a symlink to {target}, outside the "
                                          f"manifest's folder {real_root} (root_only)")


def _rows(path: Path) -> Iterable[tuple[int, dict]]:
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8") as f:
        if suffix == ".csv":
            for lineno, row in enumerate(csv.DictReader(f), start=2):
                yield lineno, {k.strip(): v for k, v in row.items() if k is not None}
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}", "manifest", f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, Mapping):
                raise InputError(f"{path}:{lineno}", "manifest", f"expected a JSON object, found {type(row).__name__}")
            yield lineno, dict(row)


def load_manifest(path: str | Path, *, split: str | None = None, modalities: Sequence[str] | None = None,
                  root_only: bool = False) -> Manifest:
    """Read a ``.jsonl`` / ``.json`` (one object per line) or ``.csv`` manifest.

    ``split`` keeps one split (see :meth:`Manifest.select`); ``modalities`` drops every other modality key (and
    samples left with none). ``root_only=True`` (for services that embed files named by others) refuses any path
    that is absolute, climbs out with ``..`` or leads through a symlink outside the manifest's folder; the error
    names the manifest line.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(path, "manifest", "file does not exist")
    known = set(list_modalities())
    root = path.parent
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        items, extra = {}, {}
        for key, value in row.items():
            if key in RESERVED:
                continue
            if key in known:
                if not _is_missing(value) and (modalities is None or key in modalities):
                    items[key] = _resolve_item(root, key, value, where, root_only)
            else:
                extra[key] = value
        if modalities is not None and not items:
            continue
        sid = row.get("id")
        sid = str(len(samples)) if _is_missing(sid) else str(sid)
        if sid in seen:
            raise InputError(where, "manifest", f"duplicate id {sid!r} (first used on line {seen[sid]})")
        seen[sid] = lineno
        label = None if _is_missing(row.get("label")) else str(row["label"])
        sp = None if _is_missing(row.get("split")) else str(row["split"])
        samples.append(Sample(len(samples), sid, items, label, sp, extra, lineno))
    manifest = Manifest(path, samples)
    return manifest.select(split) if split is not None else manifest


def write_manifest(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as JSONL (paths should already be relative to ``path``'s folder). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
    return path
