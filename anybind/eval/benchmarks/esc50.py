"""ESC-50: environmental sound classification, 2000 clips of 5 s in 50 classes, 5 folds.

Layout (the ESC-50 repository as published)::

    ESC-50/meta/esc50.csv        filename,fold,target,category,esc10,src_file,take
    ESC-50/audio/<fold>-<src_file>-<take>-<target>.wav

Zero-shot protocol: the classifier is every category of the CSV (50), prompted by its readable name; ``fold``
picks the evaluated clips (``None``: all five folds, 2000 clips; the per-fold accuracies are reported as well,
and their mean equals the overall accuracy because the folds are equal in size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import BenchmarkError
from .base import BenchmarkData, Item, asset, files_under, no_items, read_csv, readable, rel, templates_for

LAYOUT = "the ESC-50 repository layout: meta/esc50.csv and audio/<fold>-<id>-<take>-<target>.wav"


def _folds(fold) -> set[int] | None:
    if fold in (None, "all", "null"):
        return None
    folds = fold if isinstance(fold, (list, tuple)) else [fold]
    try:
        out = {int(f) for f in folds}
    except (TypeError, ValueError):
        raise BenchmarkError(f"esc50: fold must be 1-5, a list of them, or null for all five; got {fold!r}") from None
    if not out <= {1, 2, 3, 4, 5}:
        raise BenchmarkError(f"esc50: fold must be 1-5, got {sorted(out)}")
    return out


def load_esc50(root: str | Path, *, fold=None, templates: Sequence[str] | None = None, **_) -> BenchmarkData:
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise BenchmarkError(f"esc50 at {root}: meta/esc50.csv not found; expected {LAYOUT}")
    audio = root / "audio"
    if not audio.is_dir():
        raise BenchmarkError(f"esc50 at {root}: the audio/ folder is missing; expected {LAYOUT}")
    rows = read_csv(meta, "esc50", ("filename", "fold", "target", "category"))
    names: dict[int, str] = {}
    for r in rows:
        try:
            t = int(r["target"])
        except ValueError:
            raise BenchmarkError(f"esc50: {meta} has a non-integer target {r['target']!r} ({r['filename']})") from None
        if names.setdefault(t, r["category"]) != r["category"]:
            raise BenchmarkError(f"esc50: {meta} gives target {t} two categories ({names[t]!r}, {r['category']!r})")
    targets = sorted(names)
    classnames = [names[t] for t in targets]
    index = {t: i for i, t in enumerate(targets)}
    shipped = asset("esc50")["classnames"]
    notes = []
    unknown = [c for c in classnames if c not in shipped]
    if unknown:
        notes.append(f"categories not in the shipped label set, prompted as written: {', '.join(unknown)}")
    want = _folds(fold)
    items, missing, listed = [], [], set()
    for r in rows:
        listed.add(r["filename"])
        f = int(r["fold"]) if r["fold"].isdigit() else r["fold"]
        if want is not None and f not in want:
            continue
        path = audio / r["filename"]
        if path.is_file():
            items.append(Item(f"audio/{r['filename']}", str(path), index[int(r["target"])], f"fold{f}"))
        else:
            missing.append(f"audio/{r['filename']}")
    extra = [rel(p, root) for p in files_under(audio, (".wav", ".flac", ".ogg", ".mp3")) if p.name not in listed]
    if not items:
        if missing:
            raise no_items("esc50", root, "clips", missing)
        raise BenchmarkError(f"esc50 at {root}: meta/esc50.csv lists no clip of fold {sorted(want or [])}")
    return BenchmarkData(
        name="esc50", task="classification", modality="audio", root=root,
        split={"name": "fold", "value": "all" if want is None else sorted(want)},
        items=items, missing=missing, extra=extra, files=[it.id for it in items], classnames=classnames,
        prompt_names=[shipped.get(c, readable(c)) for c in classnames],
        templates=templates_for("esc50", override=templates),
        protocol="zero-shot top-1 over the CSV's categories; per-fold accuracy alongside", notes=notes,
        published=2000 if want is None else 400 * len(want))
