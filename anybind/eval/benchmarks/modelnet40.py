"""ModelNet40: 3D shape classification, 12311 CAD models in 40 classes, official split 9843 train / 2468 test.

Layouts read (``variant`` picks one; by default the one the root holds):

``off``   the Princeton release: ``<root>/<class>/{train,test}/<class>_<nnnn>.off`` (meshes; points are sampled on
          the surface with a fixed seed).
``npy``   per-shape pre-sampled clouds in the same tree (``<class>/{train,test}/<id>.npy``; ``.npz``, ``.ply``,
          ``.xyz``, ``.pts`` are read too), an ``(N, 3+)`` array each.
``txt``   ``modelnet40_normal_resampled``: ``modelnet40_shape_names.txt``, ``modelnet40_{train,test}.txt`` (shape
          ids such as ``airplane_0627``) and ``<class>/<id>.txt`` (``x,y,z,nx,ny,nz`` per line; normals dropped).
``h5``    ``modelnet40_ply_hdf5_2048``: ``shape_names.txt``, ``{train,test}_files.txt`` naming
          ``ply_data_{split}<k>.h5`` files with ``data`` ``(N, 2048, 3)`` and ``label`` ``(N, 1)``. Needs ``h5py``.

Zero-shot protocol: the classifier is the 40 classes (the shipped label set, in label order), prompted by their
readable names; the ``test`` split is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import BenchmarkError
from .base import BenchmarkData, Item, asset, readable, rel, require_dir, templates_for

PER_SHAPE = (".off", ".npy", ".npz", ".ply", ".xyz", ".pts")
LAYOUT = ("<class>/{train,test}/*.off (the Princeton release; or .npy clouds), modelnet40_normal_resampled "
          "(modelnet40_shape_names.txt, modelnet40_<split>.txt, <class>/<id>.txt) or modelnet40_ply_hdf5_2048 "
          "(shape_names.txt, <split>_files.txt, ply_data_<split><k>.h5)")
PUBLISHED = {"train": 9843, "test": 2468}


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def detect_variant(root: Path) -> str:
    if ((root / "shape_names.txt").is_file() and any(root.glob("*_files.txt"))) or any(root.glob("ply_data_*.h5")):
        return "h5"
    if (root / "modelnet40_shape_names.txt").is_file():
        return "txt"
    split_dirs = [d / s for d in root.iterdir() if d.is_dir() for s in ("train", "test") if (d / s).is_dir()]
    if split_dirs:  # the class tree: "off" for meshes, "npy" for pre-sampled clouds (whichever most files are)
        n_npy = sum(1 for d in split_dirs[:8] for p in d.iterdir() if p.suffix.lower() in (".npy", ".npz"))
        n_all = sum(1 for d in split_dirs[:8] for p in d.iterdir() if p.suffix.lower() in PER_SHAPE)
        return "npy" if n_all and n_npy * 2 > n_all else "off"
    raise BenchmarkError(f"modelnet40 at {root}: no known layout found; expected {LAYOUT}")


def _classes(found: Sequence[str], root: Path) -> tuple[list[str], list[str], list[str]]:
    """(classnames, prompt names, notes): the shipped 40 when the copy's classes are among them."""
    shipped = asset("modelnet40")["classnames"]
    notes = []
    if set(found) <= set(shipped):
        absent = [c for c in shipped if c not in found]
        if absent:
            notes.append(f"class folders absent from {root} (still in the classifier): {', '.join(absent)}")
        return list(shipped), list(shipped.values()), notes
    strange = sorted(set(found) - set(shipped))
    notes.append(f"classes not in ModelNet40's 40 ({', '.join(strange)}): the classifier is the copy's own classes")
    return list(found), [readable(c) for c in found], notes


def _tree(root: Path, split: str):
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir()))
    found = [d.name for d in class_dirs]
    classnames, prompt_names, notes = _classes(found, root)
    index = {c: i for i, c in enumerate(classnames)}
    items, extra, lacking = [], [], []
    for d in class_dirs:
        folder = d / split
        if not folder.is_dir():
            lacking.append(f"{d.name}/{split}/")
            continue
        for p in sorted(q for q in folder.iterdir() if q.is_file() and not q.name.startswith(".")):
            if p.suffix.lower() in PER_SHAPE:
                items.append(Item(rel(p, root), str(p), index[d.name]))
            else:
                extra.append(rel(p, root))
    return items, lacking, extra, classnames, prompt_names, notes


def _txt(root: Path, split: str):
    names = _lines(root / "modelnet40_shape_names.txt")
    listing = root / f"modelnet40_{split}.txt"
    if not listing.is_file():
        raise BenchmarkError(f"modelnet40 at {root}: modelnet40_{split}.txt (the {split} split's shape ids) not found")
    shipped = asset("modelnet40")["classnames"]
    index = {c: i for i, c in enumerate(names)}
    items, missing = [], []
    for sid in _lines(listing):
        cls = sid.rsplit("_", 1)[0]
        if cls not in index:
            raise BenchmarkError(f"modelnet40: {listing} names shape {sid!r} of class {cls!r}, which "
                                 f"modelnet40_shape_names.txt does not list")
        p = root / cls / f"{sid}.txt"
        if p.is_file():
            items.append(Item(rel(p, root), str(p), index[cls]))
        else:
            missing.append(rel(p, root))
    return items, missing, [], names, [shipped.get(c, readable(c)) for c in names], []


def _h5(root: Path, split: str):
    try:
        import h5py
    except ImportError:
        raise BenchmarkError(f"modelnet40 at {root}: the HDF5 variant needs h5py, which is not installed "
                             f"(pip install h5py), or use the .off / normal_resampled layouts") from None
    import numpy as np

    names_file = root / "shape_names.txt"
    if not names_file.is_file():
        raise BenchmarkError(f"modelnet40 at {root}: shape_names.txt (the 40 class names) not found")
    names = _lines(names_file)
    listing = root / f"{split}_files.txt"
    files = [root / Path(x).name for x in _lines(listing)] if listing.is_file() else \
        sorted(root.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise BenchmarkError(f"modelnet40 at {root}: no {split}_files.txt and no ply_data_{split}*.h5")
    shipped = asset("modelnet40")["classnames"]
    items, missing = [], []
    for f in files:
        if not f.is_file():
            missing.append(rel(f, root))
            continue
        with h5py.File(f, "r") as h:
            if "data" not in h or "label" not in h:
                raise BenchmarkError(f"modelnet40: {f} lacks the 'data' or 'label' dataset (has {', '.join(h)})")
            data = np.asarray(h["data"], dtype=np.float32)
            labels = np.asarray(h["label"]).reshape(-1).astype(int)
        if len(data) != len(labels):
            raise BenchmarkError(f"modelnet40: {f} holds {len(data)} clouds but {len(labels)} labels")
        for i, (cloud, lab) in enumerate(zip(data, labels)):
            items.append(Item(f"{rel(f, root)}#{i}", cloud[:, :3].copy(), int(lab)))
    return items, missing, [], names, [shipped.get(c, readable(c)) for c in names], []


def load_modelnet40(root: str | Path, *, split: str = "test", variant: str | None = None,
                    templates: Sequence[str] | None = None, **_) -> BenchmarkData:
    root = require_dir(Path(root), "modelnet40", LAYOUT)
    split = split or "test"
    if split not in ("train", "test"):
        raise BenchmarkError(f"modelnet40: split must be train or test, got {split!r}")
    variant = variant or detect_variant(root)
    readers = {"off": _tree, "npy": _tree, "txt": _txt, "h5": _h5}
    if variant not in readers:
        raise BenchmarkError(f"modelnet40: variant must be one of {', '.join(readers)}, got {variant!r}")
    items, missing, extra, classnames, prompt_names, notes = readers[variant](root, split)
    if not items:
        what = ", ".join(missing[:5]) if missing else f"no shape under <class>/{split}/"
        raise BenchmarkError(f"modelnet40 at {root} ({variant} layout): no {split} shape found ({what}); "
                             f"expected {LAYOUT}")
    files = sorted({it.id.split("#")[0] for it in items})
    return BenchmarkData(
        name="modelnet40", task="classification", modality="points", root=root,
        split={"name": "split", "value": split, "variant": variant}, items=items, missing=missing, extra=extra,
        files=files if variant != "h5" else [it.id for it in items], classnames=classnames, prompt_names=prompt_names,
        templates=templates_for("modelnet40", override=templates), notes=notes, published=PUBLISHED[split],
        protocol="zero-shot top-1 over the 40 classes on the official split")
