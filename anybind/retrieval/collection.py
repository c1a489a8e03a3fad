"""What a collection holds and how its embedding is planned: items from a folder, a manifest or a list, in shards.

An item is a dict ``{"id", "modality", "source", ...extra}``. Folders: every file whose extension a modality claims
is an item, except *sidecars*: a ``.txt`` file beside a media file of the same name (``clip.ogg`` + ``clip.txt`` or
``clip.ogg.txt``: an attribution, a transcript, a caption) describes that file and is skipped unless
``text_sidecars=True``. Hidden files and folders are skipped. What was skipped, and why, is counted by reason.

Items are planned into single-modality shards (:func:`plan_shards`) in a stable order, and a shard's inputs are
recognised on resume by :func:`rows_digest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InputError
from ..modality import get_modality, list_modalities, modality_for_path
from .store import inputs_digest

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".json")
SIDECAR_SUFFIX = ".txt"
SIDECAR_REASON = "sidecar .txt files beside media of the same name (text_sidecars=true embeds them)"


def _suffix_counts(paths: Iterable[Path]) -> str:
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.suffix.lower() or "(none)"] = counts.get(p.suffix.lower() or "(none)", 0) + 1
    return ", ".join(f"{s} {n}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _media_suffixes() -> set[str]:
    """Suffixes of every modality that is not text (what a sidecar ``.txt`` can describe)."""
    out: set[str] = set()
    for m in list_modalities():
        spec = get_modality(m)
        if not spec.text_like:
            out.update(spec.extensions)
    return out


def is_sidecar(path: Path, siblings: set[str], media: set[str]) -> bool:
    """Whether ``path`` is a ``.txt`` file describing a media file beside it: ``X.txt`` next to ``X.<media ext>``,
    or ``X.<media ext>.txt`` next to ``X.<media ext>`` (``siblings``: the file names in its folder)."""
    if path.suffix.lower() != SIDECAR_SUFFIX:
        return False
    stem = path.name[: -len(path.suffix)]
    if Path(stem).suffix.lower() in media and stem in siblings:
        return True
    return any(f"{stem}{ext}" in siblings or f"{stem}{ext.upper()}" in siblings for ext in media)


def items_from_folder(folder: str | Path, modality: str | None = None, *, recursive: bool = True,
                      root_only: bool = False, text_sidecars: bool = False) -> tuple[list[dict], dict]:
    """Every file under ``folder`` as an item; the modality comes from the extension unless given.

    Returns ``(items, ignored)``: ``ignored`` counts the files left out, by reason (sidecar ``.txt`` files beside
    media of the same name, unless ``text_sidecars``; files no modality claims; with ``modality`` given, files that
    modality cannot read). The id of an item is its path relative to ``folder``. ``root_only`` refuses a symlink
    leading outside it. Hidden files and folders (``.name``) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    by_dir: dict[Path, set[str]] = {}
    for p in files:
        by_dir.setdefault(p.parent, set()).add(p.name)
    forced = get_modality(modality) if modality is not None else None
    media = _media_suffixes()
    items, sidecars, unknown, unreadable = [], 0, [], []
    for p in files:
        if root_only:
            from ..data.manifest import check_inside

            check_inside(folder, p.relative_to(folder).as_posix(), modality=modality or "input", where=p)
        if forced is not None:
            if forced.readable_extensions and p.suffix.lower() not in forced.readable_extensions:
                if not text_sidecars and not forced.text_like and is_sidecar(p, by_dir[p.parent], media):
                    sidecars += 1
                else:
                    unreadable.append(p)
                continue
            m = forced.name
        else:
            try:
                m = modality_for_path(p)
            except InputError:
                unknown.append(p)
                continue
            if m == "text" and not text_sidecars and is_sidecar(p, by_dir[p.parent], media):
                sidecars += 1
                continue
        items.append({"id": p.relative_to(folder).as_posix(), "modality": m, "source": str(p)})
    ignored: dict[str, int] = {}
    if sidecars:
        ignored[SIDECAR_REASON] = sidecars
    if unknown:
        ignored[f"files of no known modality ({_suffix_counts(unknown)})"] = len(unknown)
    if unreadable:
        ignored[f"files that are not {modality} ({_suffix_counts(unreadable)})"] = len(unreadable)
    return items, ignored


def items_from_manifest(path: str | Path, *, modalities: Iterable[str] | None = None, split: str | None = None,
                        root_only: bool = False) -> list[dict]:
    """One item per (sample, modality) of a manifest (ARCHITECTURE contract 4), read by :mod:`anybind.data.manifest`.

    Row metadata keeps the sample's ``id``, ``label``, ``split`` and its other keys (under ``extra``), so that
    evaluation can match samples across modalities.
    """
    from ..data.manifest import load_manifest

    manifest = load_manifest(path, split=split, modalities=None if modalities is None else list(modalities),
                             root_only=root_only)
    items = []
    for sample in manifest:
        extra = {k: v for k, v in (("label", sample.label), ("split", sample.split)) if v is not None}
        if sample.extra:
            extra["extra"] = dict(sample.extra)
        for m, source in sample.items.items():
            items.append({"id": sample.id, "modality": m, "source": source, **extra})
    return items


def source_name(source: Any) -> str | None:
    """How a row records its input: the path or text as a string (``None`` for in-memory data: arrays, tensors)."""
    if isinstance(source, (str, Path)):
        return str(source)
    return None


def normalize_items(items: Sequence[Any], default_modality: str | None) -> list[dict]:
    out = []
    for i, it in enumerate(items):
        if isinstance(it, Mapping):
            row = dict(it)
            if "source" not in row:
                raise ValueError(f"item {i} has no 'source' (a path, a text or a tensor): {row}")
        else:
            row = {"source": it}
        if row.get("modality") is None:
            row["modality"] = default_modality or modality_for_path(row["source"])
        row.setdefault("id", source_name(row["source"]) or str(i))
        row["id"] = str(row["id"])
        out.append(row)
    return out


def plan_shards(items: Sequence[dict], shard_size: int) -> list[tuple[str, str, list[dict]]]:
    """Group items by modality (first appearance order) and cut each group into shards: ``(name, modality, rows)``."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it["modality"], []).append(it)
    plan, n = [], 0
    for m, rows in groups.items():
        for lo in range(0, len(rows), shard_size):
            plan.append((f"{n:05d}-{m}", m, rows[lo:lo + shard_size]))
            n += 1
    return plan


def resolve_items(source, modality: str | None = None, modalities: Iterable[str] | None = None,
                  split: str | None = None, root_only: bool = False,
                  text_sidecars: bool = False) -> tuple[list[dict], dict]:
    """``(items, ignored)`` of a collection: a folder (:func:`items_from_folder`), a manifest
    (:func:`items_from_manifest`) or a list of items (paths or ``{"source", "modality"?, "id"?, ...}`` dicts)."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            items, ignored = items_from_folder(p, modality, root_only=root_only, text_sidecars=text_sidecars)
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            items, ignored = items_from_manifest(p, modalities=modalities, split=split, root_only=root_only), {}
        elif not p.exists():
            raise FileNotFoundError(f"input {p} does not exist (give a folder or a manifest: "
                                    f"{', '.join(MANIFEST_SUFFIXES)})")
        else:
            raise ValueError(f"{p} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        items, ignored = normalize_items(list(source), modality), {}
    return items, ignored


def rows_digest(rows: Sequence[dict]) -> str:
    """The digest of planned rows that a shard's marker records (:func:`~anybind.retrieval.store.inputs_digest`)."""
    return inputs_digest({**r, "source": source_name(r["source"])} for r in rows)
