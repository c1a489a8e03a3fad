"""Class folders, for any modality: ``<root>/<class>/<files>`` or ``<root>/<split>/<class>/<files>``.

The ImageNet-style layout: one folder per class (files may sit in sub-folders of it). The class names prompted are
the folder names with underscores as spaces, or a mapping (``classnames``: a JSON file or dict ``{folder: name}``,
or a list in folder order). The modality is ``modality`` or, by default, the one the files' extensions name
(files of other modalities are reported as extra, never read). With split folders (``train``, ``val``, ``test``)
under the root, ``split`` picks one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ...errors import InputError
from ...modality import get_modality, modality_for_path
from ..errors import BenchmarkError
from .base import BenchmarkData, Item, readable, rel, require_dir, templates_for

SPLIT_NAMES = ("train", "val", "validation", "test", "eval", "evaluation")
LAYOUT = "one folder per class, <root>/<class>/<files> (or <root>/<split>/<class>/<files> with split=<split>)"


def _modality_of(p: Path) -> str | None:
    try:
        return modality_for_path(p)
    except InputError:
        return None


def _class_map(classnames: Any, folders: Sequence[str]) -> dict[str, str]:
    if classnames is None:
        return {f: readable(f) for f in folders}
    if isinstance(classnames, (str, Path)):
        path = Path(classnames)
        try:
            classnames = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchmarkError(f"folder: classnames file {path} is not readable JSON ({exc})") from exc
    if isinstance(classnames, (list, tuple)):
        if len(classnames) != len(folders):
            raise BenchmarkError(f"folder: {len(classnames)} class names for {len(folders)} class folders")
        return dict(zip(folders, map(str, classnames)))
    lacking = [f for f in folders if f not in classnames]
    if lacking:
        raise BenchmarkError(f"folder: the classnames mapping has no name for folder(s) {', '.join(lacking[:10])}")
    return {f: str(classnames[f]) for f in folders}


def load_folder(root: str | Path, *, split: str | None = None, modality: str | None = None,
                classnames: Any = None, templates: Sequence[str] | None = None, **_) -> BenchmarkData:
    root = require_dir(Path(root), "folder", LAYOUT)
    base = root
    if split:
        base = root / split
        if not base.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise BenchmarkError(f"folder at {root}: no split folder {split!r} (has {', '.join(have) or 'no folders'})")
    subdirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not split:
        splits = [d.name for d in subdirs if d.name.lower() in SPLIT_NAMES]
        if splits and len(splits) == len(subdirs) and any(q.is_dir() for d in subdirs for q in d.iterdir()):
            raise BenchmarkError(f"folder at {root}: holds split folders {', '.join(splits)}; pick one with "
                                 f"benchmark.split=<name>")
    if len(subdirs) < 2:
        raise BenchmarkError(f"folder at {base}: found {len(subdirs)} class folder(s); expected {LAYOUT} "
                             f"with at least two classes")
    files = {d.name: sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")) for d in subdirs}
    loose = sorted(rel(p, root) for p in base.iterdir() if p.is_file() and not p.name.startswith("."))
    if modality is None:
        counts = Counter(m for fs in files.values() for p in fs if (m := _modality_of(p)) is not None)
        if not counts:
            raise BenchmarkError(f"folder at {base}: no file of a known modality in the class folders; "
                                 f"give benchmark.modality=<name>")
        modality = counts.most_common(1)[0][0]
    spec = get_modality(modality)
    folders = [d.name for d in subdirs]
    names = _class_map(classnames, folders)
    items, extra, empty = [], list(loose), []
    for label, folder in enumerate(folders):
        n = 0
        for p in files[folder]:
            ok = p.suffix.lower() in spec.extensions if spec.extensions else True
            if ok:
                items.append(Item(rel(p, root), str(p), label))
                n += 1
            else:
                extra.append(rel(p, root))
        if not n:
            empty.append(folder)
    if not items:
        raise BenchmarkError(f"folder at {base}: no {modality} file ({', '.join(spec.extensions)}) in any class folder")
    notes = [f"class folders without {modality} files: {', '.join(empty)}"] if empty else []
    return BenchmarkData(
        name="folder", task="classification", modality=modality, root=root,
        split={"name": "split", "value": split}, items=items, missing=[], extra=extra,
        files=[it.id for it in items], classnames=folders, prompt_names=[names[f] for f in folders],
        templates=templates_for("folder", modality, templates),
        protocol="zero-shot top-1 over the class folders", notes=notes)
