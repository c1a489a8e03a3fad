"""COCO captions: text-image retrieval (text->image and image->text R@1/5/10).

Two caption files are read (``captions`` names one; by default the first found):

* Karpathy's split file ``dataset_coco.json`` (in ``<root>/``, ``annotations/``, ``karpathy/``,
  ``caption_datasets/``): ``{"images": [{"filepath": "val2014", "filename": ..., "split": "test",
  "sentences": [{"raw": ...}, ...]}, ...]}``; images at ``<root>/<filepath>/<filename>`` (or ``images/...``).
  ``split`` is ``test`` (the 5k test images, the usual protocol), ``val``, ``restval`` or ``train``.
* An official captions JSON (``annotations/captions_val2017.json``, ``captions_val2014.json``, or any file of that
  format): ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``; every image it lists,
  read from ``<root>/<name>/`` where ``<name>`` is the file's ``val2017`` part (or ``images/<name>/``, ``images/``).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BenchmarkError
from .base import BenchmarkData, Item, asset, no_items, read_json, rel, require_dir

KARPATHY_PLACES = ("dataset_coco.json", "annotations/dataset_coco.json", "karpathy/dataset_coco.json",
                   "caption_datasets/dataset_coco.json")
OFFICIAL_PLACES = ("annotations/captions_val2017.json", "annotations/captions_val2014.json", "captions_val2017.json",
                   "captions_val2014.json")
KARPATHY_SPLITS = ("test", "val", "restval", "train")
LAYOUT = ("dataset_coco.json (Karpathy's splits) with the images under val2014/ and train2014/, or "
          "annotations/captions_val2017.json with the images under val2017/")


def _find(root: Path, places) -> Path | None:
    return next((root / p for p in places if (root / p).is_file()), None)


def _karpathy(root: Path, data: dict, split: str, table: Path):
    if split not in KARPATHY_SPLITS:
        raise BenchmarkError(f"coco: with Karpathy's dataset_coco.json, split must be one of "
                             f"{', '.join(KARPATHY_SPLITS)}, got {split!r}")
    items, missing, captions = [], [], []
    for im in data["images"]:
        if im.get("split") != split:
            continue
        relpath = f"{im.get('filepath', '')}/{im['filename']}".lstrip("/")
        cands = [root / relpath, root / "images" / relpath, root / im["filename"]]
        hit = next((p for p in cands if p.is_file()), None)
        if hit:
            items.append(Item(relpath, str(hit)))
        else:
            missing.append(relpath)
        captions += [(relpath, s.get("raw") or " ".join(s.get("tokens", []))) for s in im.get("sentences", [])]
    if not items and not missing:
        raise BenchmarkError(f"coco: {table} lists no image with split {split!r}")
    return items, missing, captions, split


def _official(root: Path, data: dict, table: Path):
    m = re.search(r"(train|val|test)\d{4}", table.stem)
    name = m.group(0) if m else table.stem
    folders = [root / name, root / "images" / name, root / "images", root]
    by_id, items, missing = {}, [], []
    for im in data["images"]:
        relpath = f"{name}/{im['file_name']}"
        hit = next((f / im["file_name"] for f in folders if (f / im["file_name"]).is_file()), None)
        by_id[im["id"]] = relpath
        if hit:
            items.append(Item(relpath, str(hit)))
        else:
            missing.append(relpath)
    captions = []
    for a in data["annotations"]:
        if a["image_id"] not in by_id:
            raise BenchmarkError(f"coco: {table} has a caption of image id {a['image_id']}, which it does not list")
        captions.append((by_id[a["image_id"]], a["caption"]))
    return items, missing, captions, name


def load_coco(root: str | Path, *, split: str | None = None, captions: str | None = None, **_) -> BenchmarkData:
    root = require_dir(Path(root), "coco", LAYOUT)
    if captions:
        table = Path(captions) if Path(captions).is_absolute() else root / captions
        if not table.is_file():
            raise BenchmarkError(f"coco: captions file {table} not found")
    elif split in (None, *KARPATHY_SPLITS):
        table = _find(root, KARPATHY_PLACES) or (None if split in KARPATHY_SPLITS else _find(root, OFFICIAL_PLACES))
    else:
        table = _find(root, (f"annotations/captions_{split}.json", f"captions_{split}.json"))
    if table is None:
        looked = KARPATHY_PLACES + (() if split in KARPATHY_SPLITS else OFFICIAL_PLACES)
        raise BenchmarkError(f"coco at {root}: no caption file found (looked for {', '.join(looked)}); expected {LAYOUT}")
    data = read_json(table, "coco")
    if isinstance(data, dict) and data.get("images") and "sentences" in data["images"][0]:
        items, missing, caps, used = _karpathy(root, data, split or "test", table)
        kind = "karpathy"
    elif isinstance(data, dict) and "images" in data and "annotations" in data:
        items, missing, caps, used = _official(root, data, table)
        kind = "captions"
    else:
        raise BenchmarkError(f"coco: {table} is neither Karpathy's dataset_coco.json (images with sentences) nor a "
                             f"captions JSON (images and annotations)")
    if not items:
        raise no_items("coco", root, "images", missing)
    published = asset("coco")["splits"].get(used, {})
    return BenchmarkData(
        name="coco", task="retrieval", modality="image", root=root,
        split={"name": "split", "value": used, "captions_file": rel(table, root), "format": kind},
        items=items, missing=missing, files=[it.id for it in items], captions=caps,
        published=published.get("images"), protocol=published.get("protocol", f"every image of {table.name}"))
