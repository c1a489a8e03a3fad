"""What a benchmark adapter returns, and the helpers adapters share (finding files, reading tables, assets).

An adapter reads a local copy of a dataset in its published layout and returns a :class:`BenchmarkData`: the
items of the requested split that exist (``items``), those its own index lists but the copy lacks (``missing``),
files present in the copy that its index does not list (``extra``), and what the protocol needs to score them
(class names and templates, or captions). Nothing is dropped silently: a run reports every list.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import BenchmarkError


@dataclass
class Item:
    """One media item: ``id`` (stable, e.g. the path relative to the root), ``source`` (a path, or an array for
    pre-sampled variants), ``label`` (class index, classification only), ``group`` (e.g. the ESC-50 fold)."""

    id: str
    source: Any
    label: int | None = None
    group: str | None = None


@dataclass
class BenchmarkData:
    """A benchmark's split as found on disk. ``task`` is ``classification`` (``classnames``, ``prompt_names``,
    ``templates``) or ``retrieval`` (``captions``: ``(item id, caption)`` pairs, text against ``modality``)."""

    name: str
    task: str
    modality: str
    root: Path
    split: dict[str, Any]
    items: list[Item]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    classnames: list[str] = field(default_factory=list)
    prompt_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    captions: list[tuple[str, str]] = field(default_factory=list)
    protocol: str = ""
    notes: list[str] = field(default_factory=list)
    published: int | None = None  # the item count of this split in the published dataset, when known

    def summary(self) -> dict[str, Any]:
        """Counts and the full missing / extra lists, as the result JSON records them."""
        out: dict[str, Any] = {"found": len(self.items), "missing": len(self.missing), "extra": len(self.extra),
                               "published": self.published,
                               "missing_items": list(self.missing), "extra_files": list(self.extra)}
        if self.task == "retrieval":
            found = {it.id for it in self.items}
            out["captions"] = len(self.captions)
            out["captions_of_found_items"] = sum(i in found for i, _ in self.captions)
        else:
            out["classes"] = len(self.classnames)
        return out


def asset(name: str) -> dict[str, Any]:
    """A JSON file shipped with anybind (``anybind/eval/benchmarks/assets/<name>.json``): label sets, templates."""
    path = resources.files(__package__).joinpath("assets", f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def templates_for(name: str, modality: str | None = None, override: Sequence[str] | None = None) -> list[str]:
    """``override`` when given, else the shipped templates of benchmark ``name`` (per modality for ``folder``)."""
    if override:
        return list(override)
    data = asset(name)["templates"]
    if isinstance(data, dict):
        if modality not in data:
            raise BenchmarkError(f"no shipped templates for modality {modality!r} in {name}.json "
                                 f"(has {', '.join(data)}); pass benchmark.templates=[...]")
        return list(data[modality])
    return list(data)


def require_dir(path: Path, benchmark: str, layout: str) -> Path:
    """``path`` when it is a folder, else a :class:`BenchmarkError` giving the layout expected there."""
    if not path.is_dir():
        raise BenchmarkError(f"{benchmark}: {path} is not a folder; expected {layout}")
    return path


def published_split(benchmark: str, split: str | None, default: str) -> tuple[str, dict[str, Any]]:
    """``(split, what is published about it)``: ``split`` (``default`` when empty) checked against the splits that
    ``<benchmark>.json`` ships (their sizes and protocol)."""
    split = split or default
    published = asset(benchmark)["splits"]
    if split not in published:
        raise BenchmarkError(f"{benchmark}: split must be one of {', '.join(published)}, got {split!r}")
    return split, published[split]


def first_existing(root: Path, candidates: Iterable[str], benchmark: str, what: str, layout: str,
                   kind: str = "file") -> Path:
    """The first of ``root/<candidate>`` that exists (a file, or a folder when ``kind="dir"``), else a
    :class:`BenchmarkError` naming every place looked at."""
    tried = []
    for c in candidates:
        p = root / c
        tried.append(c)
        if (p.is_file() if kind == "file" else p.is_dir()):
            return p
    raise BenchmarkError(f"{benchmark} at {root}: {what} not found (looked for {', '.join(tried)}); expected {layout}")


def read_csv(path: Path, benchmark: str, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; a missing column is a :class:`BenchmarkError` naming it."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchmarkError(f"{benchmark}: {path} cannot be read as CSV ({exc})") from exc
    lacking = [c for c in required if c not in header]
    if lacking:
        raise BenchmarkError(f"{benchmark}: {path} lacks column(s) {', '.join(lacking)} "
                             f"(has {', '.join(header) or 'none'})")
    if not rows:
        raise BenchmarkError(f"{benchmark}: {path} has a header but no rows")
    return rows


def read_json(path: Path, benchmark: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"{benchmark}: {path} is not readable JSON ({exc})") from exc


def files_under(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Every non-hidden file under ``folder`` with one of ``suffixes`` (lower case), sorted."""
    suffixes = {s.lower() for s in suffixes}
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in suffixes)


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def readable(name: str) -> str:
    """A folder or category name as words: ``chirping_birds`` -> ``chirping birds``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def no_items(benchmark: str, root: Path, what: str, missing: Sequence[str]) -> BenchmarkError:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return BenchmarkError(f"{benchmark} at {root}: none of the {len(missing)} {what} listed for this split exists "
                          f"(missing: {shown})")
