"""Miniature copies of the benchmarks in their published layouts: a few tiny generated items per class.

Each ``make_*`` writes into a folder the test owns and returns a :class:`Mini`: the root, the items the adapter
must find, and, for the oracle model (``oracle.py``), one reference input and one keyword per class (or per item,
for retrieval). Classes differ in what the oracle reads: tone frequency, colour, grey level, box proportions.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: assets.py
from assets import cube_mesh, write_audio, write_off, write_video  # noqa: E402

CODEWORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum")


@dataclass
class Mini:
    root: Path
    expected: list[str]  # item ids the adapter must find for the split asked
    references: list[Any] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def tone_hz(c: int) -> float:
    return 400.0 + 900.0 * c


def write_tone(path: Path, c: int, jitter: int = 0, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_audio(path, seconds=seconds, freq=tone_hz(c) * (1 + 0.01 * jitter))


def box(c: int) -> np.ndarray:
    """Box proportions of class ``c`` (what the oracle reads from a point cloud)."""
    return np.array([1.0, 0.3 + 0.15 * c, 0.1 + 0.05 * c])


def write_box_off(path: Path, c: int, jitter: int = 0) -> Path:
    v, quads = cube_mesh()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_off(path, v * box(c) * (1 + 0.05 * jitter), quads)


def box_cloud(c: int, n: int = 512, seed: int = 0) -> np.ndarray:
    """Points on the surface of class ``c``'s box."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.5, 0.5, (n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = rng.choice([-0.5, 0.5], n)
    return (p * box(c)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ ESC-50
ESC_CLASSES = {0: "dog", 10: "rain", 14: "chirping_birds", 30: "door_wood_knock", 42: "siren"}
ESC_NAMES = {"dog": "dog", "rain": "rain", "chirping_birds": "chirping birds",
             "door_wood_knock": "knocking on a wooden door", "siren": "siren"}


def make_esc50(root: Path, per_fold: int = 1, drop: int = 0, extra: int = 0) -> Mini:
    """``meta/esc50.csv`` + ``audio/<fold>-<src>-<take>-<target>.wav``: per_fold clips per class and fold."""
    (root / "meta").mkdir(parents=True)
    rows, expected, missing = [], [], []
    src = 100000
    for fold in range(1, 6):
        for c, (target, cat) in enumerate(ESC_CLASSES.items()):
            for j in range(per_fold):
                src += 1
                name = f"{fold}-{src}-A-{target}.wav"
                rows.append({"filename": name, "fold": fold, "target": target, "category": cat, "esc10": "False",
                             "src_file": src, "take": "A"})
                if len(missing) < drop:
                    missing.append(f"audio/{name}")
                    continue
                write_tone(root / "audio" / name, c, jitter=fold + j)
                expected.append(f"audio/{name}")
    with (root / "meta" / "esc50.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    extras = []
    for k in range(extra):
        write_tone(root / "audio" / f"stray-{k}.wav", 0)
        extras.append(f"audio/stray-{k}.wav")
    refs = [str(write_tone(root.parent / f"{root.name}-ref" / f"{c}.wav", c)) for c in range(len(ESC_CLASSES))]
    return Mini(root, expected, refs, [ESC_NAMES[c] for c in ESC_CLASSES.values()], missing, extras)


# -------------------------------------------------------------------------------------------- ModelNet40
MN_CLASSES = ("airplane", "chair", "lamp", "night_stand")
MN_NAMES = {"airplane": "airplane", "chair": "chair", "lamp": "lamp", "night_stand": "nightstand"}


def mn_keywords() -> list[str]:
    """The oracle's keywords in the classifier's order: the 40 shipped names (only 4 have references)."""
    from anybind.eval.benchmarks import asset

    return list(asset("modelnet40")["classnames"].values())


def mn_references(root: Path) -> list[Any]:
    """One reference cloud per shipped class: the miniature's boxes for its classes, far-away blobs for the rest."""
    from anybind.eval.benchmarks import asset

    refs = []
    for k, name in enumerate(asset("modelnet40")["classnames"]):
        if name in MN_CLASSES:
            refs.append(box_cloud(MN_CLASSES.index(name), seed=99))
        else:  # classes without items: an implausible prototype (a needle), never the nearest
            refs.append(np.concatenate([np.zeros((256, 2)), np.linspace(-1, 1, 256)[:, None]], axis=1).astype(np.float32)
                        + 1e-3 * k)
    return refs


def make_modelnet40(root: Path, variant: str = "off", train: int = 2, test: int = 2) -> Mini:
    expected = []
    if variant in ("off", "npy"):
        for c, cls in enumerate(MN_CLASSES):
            for split, n in (("train", train), ("test", test)):
                for j in range(n):
                    stem = f"{cls}_{(j + 1) if split == 'train' else (100 + j):04d}"
                    p = root / cls / split / f"{stem}.{variant}"
                    if variant == "off":
                        write_box_off(p, c, jitter=j)
                    else:
                        p.parent.mkdir(parents=True, exist_ok=True)
                        np.save(p, box_cloud(c, seed=j) * (1 + 0.05 * j))
                    if split == "test":
                        expected.append(p.relative_to(root).as_posix())
    elif variant == "txt":  # modelnet40_normal_resampled
        root.mkdir(parents=True)
        from anybind.eval.benchmarks import asset

        (root / "modelnet40_shape_names.txt").write_text("\n".join(asset("modelnet40")["classnames"]) + "\n")
        lists = {"train": [], "test": []}
        for c, cls in enumerate(MN_CLASSES):
            for split, n in (("train", train), ("test", test)):
                for j in range(n):
                    sid = f"{cls}_{(j + 1) if split == 'train' else (100 + j):04d}"
                    lists[split].append(sid)
                    pts = box_cloud(c, seed=j)
                    normals = np.tile([0.0, 0.0, -1.0], (len(pts), 1))  # negative: not read as colour
                    (root / cls).mkdir(exist_ok=True)
                    np.savetxt(root / cls / f"{sid}.txt", np.concatenate([pts, normals], 1), delimiter=",", fmt="%.6f")
                    if split == "test":
                        expected.append(f"{cls}/{sid}.txt")
        for split, ids in lists.items():
            (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    else:
        raise ValueError(variant)
    return Mini(root, expected, mn_references(root), mn_keywords())


def make_modelnet40_h5(root: Path, per_class: int = 2) -> Mini:
    import h5py

    from anybind.eval.benchmarks import asset

    names = list(asset("modelnet40")["classnames"])
    root.mkdir(parents=True)
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    data, labels = [], []
    for c, cls in enumerate(MN_CLASSES):
        for j in range(per_class):
            data.append(box_cloud(c, n=256, seed=j))
            labels.append(names.index(cls))
    with h5py.File(root / "ply_data_test0.h5", "w") as h:
        h["data"] = np.stack(data)
        h["label"] = np.array(labels, dtype=np.uint8)[:, None]
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    expected = [f"ply_data_test0.h5#{i}" for i in range(len(data))]
    return Mini(root, expected, mn_references(root), mn_keywords())


# ------------------------------------------------------------------------------------------ retrieval sets
def make_msrvtt(root: Path, n: int = 4, drop: int = 0) -> Mini:
    """``MSRVTT_JSFUSION_test.csv`` (1k-A), ``MSRVTT_data.json`` and ``videos/all/video<k>.mp4``."""
    (root / "videos" / "all").mkdir(parents=True)
    vids = [f"video{7000 + k}" for k in range(n)]
    refs, expected, missing = [], [], []
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "key", "vid_key", "video_id", "sentence"])
        for k, vid in enumerate(vids):
            w.writerow([k, f"ret{k}", f"msr{7000 + k}", vid, f"a clip about {CODEWORDS[k]} on a table"])
    for k, vid in enumerate(vids):
        if k < drop:
            missing.append(f"videos/all/{vid}.mp4")
        else:
            write_video(root / "videos" / "all" / f"{vid}.mp4", frames=4, fps=2, size=(32, 32), start=20 + 50 * k)
            expected.append(vid)
        refs.append(str(write_video(root.parent / f"{root.name}-ref-{k}.mp4", frames=4, fps=2, size=(32, 32),
                                    start=20 + 50 * k)))
    sentences = [{"video_id": vid, "caption": f"{CODEWORDS[k]} {t}", "sen_id": 2 * k + t}
                 for k, vid in enumerate(vids) for t in range(2)]
    videos = [{"video_id": vid, "split": "test"} for vid in vids] + [{"video_id": "video1", "split": "train"}]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return Mini(root, expected, refs, list(CODEWORDS[:n]), missing)


def make_clotho(root: Path, n: int = 4, drop: int = 0, extra: int = 0) -> Mini:
    (root / "evaluation").mkdir(parents=True)
    expected, missing, refs = [], [], []
    with (root / "clotho_captions_evaluation.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for k in range(n):
            name = f"clip {k} (field recording).wav"
            w.writerow([name] + [f"the {CODEWORDS[k]} sound number {i}" for i in range(1, 6)])
            if k < drop:
                missing.append(f"evaluation/{name}")
            else:
                write_tone(root / "evaluation" / name, k, jitter=1)
                expected.append(f"evaluation/{name}")
            refs.append(str(write_tone(root.parent / f"{root.name}-ref" / f"{k}.wav", k)))
    extras = []
    for k in range(extra):
        write_tone(root / "evaluation" / f"unlisted-{k}.wav", 0)
        extras.append(f"evaluation/unlisted-{k}.wav")
    return Mini(root, expected, refs, list(CODEWORDS[:n]), missing, extras)


def make_audiocaps(root: Path, n: int = 4, drop: int = 0) -> Mini:
    (root / "test").mkdir(parents=True)
    expected, missing, refs = [], [], []
    with (root / "test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        for k in range(n):
            yt = f"yt{k}abcDEF_"[:11]
            for t in range(2):
                w.writerow([1000 + 2 * k + t, yt, 30, f"someone describes a {CODEWORDS[k]} ({t})"])
            if k < drop:
                missing.append(f"test/{yt}.wav")
                continue
            name = f"Y{yt}.wav" if k % 2 else f"{yt}_30.wav"  # downloaders name clips differently
            write_tone(root / "test" / name, k, jitter=2)
            expected.append(yt)
    refs = [str(write_tone(root.parent / f"{root.name}-ref" / f"{k}.wav", k)) for k in range(n)]
    return Mini(root, expected, refs, list(CODEWORDS[:n]), missing)


COLORS = [(230, 30, 30), (30, 210, 40), (30, 40, 230), (230, 220, 40), (200, 40, 220), (40, 220, 220)]


def write_png(path: Path, rgb, seed: int = 0) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb)[None, None] + rng.integers(-10, 10, (24, 28, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def make_coco(root: Path, n: int = 4, official: bool = False) -> Mini:
    refs = [str(write_png(root.parent / f"{root.name}-ref" / f"{k}.png", COLORS[k], seed=50)) for k in range(n)]
    expected = []
    if official:
        images, anns = [], []
        for k in range(n):
            fname = f"{k:012d}.jpg"
            write_png(root / "val2017" / fname, COLORS[k], seed=k)  # PNG bytes behind .jpg: the reader sniffs
            images.append({"id": 10 + k, "file_name": fname})
            anns += [{"image_id": 10 + k, "id": 100 + 5 * k + t, "caption": f"a {CODEWORDS[k]} photo {t}"}
                     for t in range(5)]
            expected.append(f"val2017/{fname}")
        (root / "annotations").mkdir(parents=True)
        (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    else:
        images = []
        for k in range(n + 2):  # two training images that the test split must not pick up
            split = "test" if k < n else "train"
            fname = f"COCO_val2014_{k:012d}.png"
            write_png(root / "val2014" / fname, COLORS[k % len(COLORS)], seed=k)
            images.append({"filepath": "val2014", "filename": fname, "split": split, "cocoid": k,
                           "sentences": [{"raw": f"a {CODEWORDS[k]} on a plate {t}."} for t in range(5)]})
            if split == "test":
                expected.append(f"val2014/{fname}")
        (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return Mini(root, expected, refs, list(CODEWORDS[:n]))


def make_folder(root: Path, per_class: int = 3, split: str | None = None) -> Mini:
    classes = ["red_square", "green_field", "blue_sky"]
    base = root / split if split else root
    expected = []
    for c, cls in enumerate(classes):
        for j in range(per_class):
            p = write_png(base / cls / f"{j}.png", COLORS[c], seed=j)
            expected.append(p.relative_to(root).as_posix())
    (base / classes[0] / "LICENSE.txt").write_text("attribution")  # a sidecar, not an image: extra
    refs = [str(write_png(root.parent / f"{root.name}-ref" / f"{c}.png", COLORS[c], seed=77)) for c in range(3)]
    return Mini(root, expected, refs, [c.replace("_", " ") for c in classes], extra=[f"{classes[0]}/LICENSE.txt"])
