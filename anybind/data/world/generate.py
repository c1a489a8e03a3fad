"""Generate the world on disk: real files per sample, one JSONL manifest per split, cached by a parameter stamp.

Layout under ``root``::

    world.json                     parameters + version + counts (the cache stamp, written last)
    train.jsonl val.jsonl test.jsonl test_heldout.jsonl
    train/image/train-00000.png    64x64 RGB
    train/audio/train-00000.wav    16 kHz mono PCM16
    train/video/train-00000.mp4    8 frames at 8 fps, MPEG-4 Part 2 (yuv420p)
    train/points/train-00000.npy   (1024, 6) float32 xyz + rgb
    train/text/train-00000.txt     only with text_files=True (the manifest always holds the caption itself)

Every sample draws its jitter from its own generator seeded by ``(seed, split, index)``, so the bytes do not
depend on the number of workers or on the order in which samples finish.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .attributes import (ATTRIBUTE_NAMES, COLORS, MOTIONS, SHAPES, SIZES, Attributes, all_combinations,
                         balanced_draw, split_combinations)

WORLD_VERSION = 2
STAMP = "world.json"
INCOMPLETE = ".world-incomplete"
SPLITS = ("train", "val", "test", "test_heldout")
MODALITY_EXT = {"image": ".png", "audio": ".wav", "video": ".mp4", "points": ".npy"}
# Every modality shows every attribute (points show colour through their rgb channels only).
VISIBILITY = {m: list(ATTRIBUTE_NAMES) for m in ("image", "text", "audio", "video", "points")}


def shared_attributes(a: str, b: str, visibility: dict[str, list[str]] | None = None) -> tuple[str, ...]:
    """The attributes both modalities ``a`` and ``b`` express (label order): the match key of the pair a->b is
    ``label_of(attributes, shared_attributes(a, b))``. With the built-in renderers that is all four for every pair.
    """
    vis = VISIBILITY if visibility is None else visibility
    for m in (a, b):
        if m not in vis:
            raise KeyError(f"no visibility recorded for modality {m!r} (known: {', '.join(sorted(vis))})")
    return tuple(k for k in ATTRIBUTE_NAMES if k in vis[a] and k in vis[b])


@dataclass
class WorldParams:
    n_train: int = 6000
    n_val: int = 200
    n_test: int = 200
    n_heldout: int = 200
    heldout_fraction: float = 0.1
    seed: int = 0
    image_size: int = 64
    video_frames: int = 8
    video_fps: int = 8
    video_codec: str = "mpeg4"
    sample_rate: int = 16000
    audio_seconds: float = 1.0
    num_points: int = 1024
    text_files: bool = False

    def __post_init__(self):
        for name in ("n_train", "n_val", "n_test", "n_heldout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be even and >= 16 (video encoders need even sides), got {self.image_size}")
        if self.video_frames < 2:
            raise ValueError(f"video_frames must be >= 2 to show motion, got {self.video_frames}")
        if self.num_points < 128:
            raise ValueError(f"num_points must be >= 128 (64 of them are scale markers), got {self.num_points}")
        import av

        if self.video_codec not in av.codecs_available:
            raise ValueError(f"video_codec {self.video_codec!r} is not an encoder PyAV knows; use 'mpeg4'")
        if self.audio_seconds < 0.5:
            raise ValueError(f"audio_seconds must be >= 0.5 (a large object's note lasts ~0.85 s), got "
                             f"{self.audio_seconds}")


@dataclass
class WorldInfo:
    """What :func:`generate_world` made (or found in its cache)."""

    root: Path
    manifests: dict[str, Path]
    attributes: dict[str, list[str]]
    heldout_combinations: list[str]
    counts: dict[str, int]
    params: dict
    visibility: dict[str, list[str]] = field(default_factory=lambda: dict(VISIBILITY))
    reused: bool = False


def plan(params: WorldParams) -> tuple[dict[str, list[Attributes]], list[Attributes]]:
    """The attribute combination of every sample of every split, and the held-out combinations."""
    combos = all_combinations()
    seen, held = split_combinations(combos, params.heldout_fraction, params.seed)
    sizes = {"train": params.n_train, "val": params.n_val, "test": params.n_test, "test_heldout": params.n_heldout}
    out = {}
    for code, split in enumerate(SPLITS):
        pool = held if split == "test_heldout" else seen
        if sizes[split] and not pool:
            raise ValueError(f"n_heldout={params.n_heldout} but heldout_fraction=0 holds no combination out")
        out[split] = balanced_draw(pool, sizes[split], np.random.default_rng([params.seed, 1000 + code]))
    return out, held


def render_sample(task: tuple) -> dict:
    """Render and write one sample; returns its manifest row. Runs in worker processes."""
    root, params, split, index, attrs = task
    from .captions import caption
    from .cloud import make_cloud
    from .render import render_scene
    from .sound import synthesize
    from .writers import write_audio, write_image, write_points, write_video

    p = WorldParams(**params)
    a = Attributes(**attrs)
    sid = f"{split}-{index:05d}"
    rng = np.random.default_rng([p.seed, SPLITS.index(split), index])
    # One child generator per modality: changing one renderer does not shift the jitter of the others.
    g_img, g_txt, g_aud, g_pts = rng.spawn(4)
    row = {"id": sid, "split": split, "label": a.label, **a.as_dict(), "attributes": a.as_dict()}
    rel = {m: f"{split}/{m}/{sid}{ext}" for m, ext in MODALITY_EXT.items()}
    image, video = render_scene(a.shape, a.color, a.size, a.motion, g_img, image_size=p.image_size,
                                frames=p.video_frames)
    write_image(root / rel["image"], image)
    write_video(root / rel["video"], video, fps=p.video_fps, codec=p.video_codec)
    wav = synthesize(a.shape, a.color, a.size, a.motion, g_aud, sample_rate=p.sample_rate, seconds=p.audio_seconds)
    write_audio(root / rel["audio"], wav, p.sample_rate)
    write_points(root / rel["points"], make_cloud(a.shape, a.color, a.size, a.motion, g_pts, num_points=p.num_points))
    text = caption(a.shape, a.color, a.size, a.motion, g_txt)
    if p.text_files:
        path = root / f"{split}/text/{sid}.txt"
        path.write_text(text + "\n", encoding="utf-8")
    row.update(rel)
    row["text"] = text
    return row


def _read_stamp(root: Path) -> dict | None:
    try:
        return json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _info_from_stamp(root: Path, stamp: dict, reused: bool) -> WorldInfo:
    return WorldInfo(
        root=root, manifests={s: root / p for s, p in stamp["manifests"].items()},
        attributes=stamp["attributes"], heldout_combinations=stamp["heldout_combinations"],
        counts=stamp["counts"], params=stamp["params"], visibility=stamp["visibility"], reused=reused,
    )


def _check_ours(root: Path) -> None:
    """Refuse to overwrite split folders or manifests that an earlier generate_world did not make."""
    if (root / STAMP).exists() or (root / INCOMPLETE).exists():
        return
    foreign = [n for n in (*SPLITS, *(f"{s}.jsonl" for s in SPLITS)) if (root / n).exists()]
    if foreign:
        raise FileExistsError(f"{root} already holds {', '.join(foreign)} but no {STAMP}: not a world made by "
                              "generate_world; choose an empty or new folder")


def _clear(root: Path) -> None:
    """Remove what an earlier generation wrote (only the world's own files and folders)."""
    for name in (STAMP, *(f"{s}.jsonl" for s in SPLITS)):
        (root / name).unlink(missing_ok=True)
    for split in SPLITS:
        if (root / split).is_dir():
            shutil.rmtree(root / split)


def generate_world(root, *, n_train: int = 6000, n_val: int = 200, n_test: int = 200, n_heldout: int = 200,
                   heldout_fraction: float = 0.1, seed: int = 0, image_size: int = 64, video_frames: int = 8,
                   video_fps: int = 8, video_codec: str = "mpeg4", sample_rate: int = 16000,
                   audio_seconds: float = 1.0, num_points: int = 1024, text_files: bool = False,
                   num_workers: int = 2, progress: bool = True, force: bool = False) -> WorldInfo:
    """Generate (or reuse) the synthetic world under ``root``; see the module docstring for the layout.

    The world is reused when ``root/world.json`` records the same parameters and generator version; otherwise
    (or with ``force=True``) the world's files are removed and regenerated. ``num_workers=0`` renders in this
    process; the output is byte-identical for any number of workers.
    """
    params = WorldParams(n_train=n_train, n_val=n_val, n_test=n_test, n_heldout=n_heldout,
                         heldout_fraction=heldout_fraction, seed=seed, image_size=image_size,
                         video_frames=video_frames, video_fps=video_fps, video_codec=video_codec,
                         sample_rate=sample_rate, audio_seconds=audio_seconds, num_points=num_points,
                         text_files=text_files)
    root = Path(root).expanduser().resolve()
    stamp = _read_stamp(root)
    wanted = asdict(params)
    if (not force and stamp is not None and stamp.get("version") == WORLD_VERSION and stamp.get("params") == wanted
            and not (root / INCOMPLETE).exists()
            and all((root / p).is_file() for p in stamp.get("manifests", {}).values())):
        return _info_from_stamp(root, stamp, reused=True)

    assignment, held = plan(params)
    _check_ours(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / INCOMPLETE).touch()
    _clear(root)
    for split in SPLITS:
        for m in MODALITY_EXT:
            (root / split / m).mkdir(parents=True, exist_ok=True)
        if text_files:
            (root / split / "text").mkdir(parents=True, exist_ok=True)
    tasks = [(root, wanted, split, i, a.as_dict()) for split in SPLITS for i, a in enumerate(assignment[split])]
    rows = _run(tasks, num_workers, progress)

    manifests = {}
    for split in SPLITS:
        path = root / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"]):
                f.write(json.dumps(row) + "\n")
        manifests[split] = path.name
    stamp = {
        "generator": "anybind.data.world", "version": WORLD_VERSION, "params": wanted,
        "attributes": {"shape": list(SHAPES), "color": list(COLORS), "size": list(SIZES), "motion": list(MOTIONS)},
        "heldout_combinations": sorted(a.label for a in held),
        "counts": {s: len(assignment[s]) for s in SPLITS}, "manifests": manifests, "visibility": VISIBILITY,
    }
    tmp = root / (STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    tmp.replace(root / STAMP)
    (root / INCOMPLETE).unlink()
    return _info_from_stamp(root, stamp, reused=False)


def _run(tasks: list, num_workers: int, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="world", unit="sample", disable=not progress)
    rows = []
    try:
        if num_workers <= 0 or len(tasks) < 16:
            for t in tasks:
                rows.append(render_sample(t))
                bar.update()
        else:
            # fork where the platform has it: a spawned worker would re-import anybind (and torch), ~2 s each.
            # Workers only use numpy, PIL and PyAV, never torch, so forking a parent that holds torch threads
            # is safe here. One BLAS thread per worker.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            if method == "fork":  # build the point-cloud surface banks once, workers inherit them
                from .cloud import surface_bank

                for shape in SHAPES:
                    surface_bank(shape)
            with _single_threaded_children():
                pool = mp.get_context(method).Pool(num_workers)
            with pool:
                chunk = max(1, min(16, len(tasks) // (4 * num_workers)))
                for row in pool.imap_unordered(render_sample, tasks, chunksize=chunk):
                    rows.append(row)
                    bar.update()
    finally:
        bar.close()
    return rows


@contextmanager
def _single_threaded_children():
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
