"""Tiny generated datasets for the training tests: a few PNGs, WAVs, captions, point clouds and videos.

Every class has its own colour, tone and shape, so the modalities of one sample agree with each other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CLASSES = [("red", (220, 30, 30), 330.0), ("green", (30, 200, 60), 550.0), ("blue", (40, 60, 220), 880.0),
           ("yellow", (230, 220, 40), 1200.0)]


def _png(path: Path, rgb, rng) -> None:
    from PIL import Image

    arr = np.clip(np.array(rgb, dtype=np.float32) + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _wav(path: Path, freq: float, rng, seconds: float = 0.6, sr: int = 16000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    wave = 0.4 * np.sin(2 * math.pi * freq * t) + 0.02 * rng.normal(size=t.shape)
    sf.write(path, wave.astype(np.float32), sr)


def _points(path: Path, k: int, rng) -> None:
    pts = rng.normal(size=(96, 3))
    if k % 2:
        pts = pts / np.linalg.norm(pts, axis=1, keepdims=True)  # sphere
    else:
        pts = np.clip(pts, -1, 1)  # cube-ish
    pts[:, k % 3] *= 1 + k
    np.save(path, pts.astype(np.float32))


def _video(path: Path, rgb, rng, frames: int = 8) -> None:
    import av

    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=4)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    for i in range(frames):
        arr = np.clip(np.array(rgb, dtype=np.float32) * (0.6 + 0.05 * i) + rng.normal(0, 8, (32, 32, 3)), 0, 255)
        for packet in s.encode(av.VideoFrame.from_ndarray(arr.astype(np.uint8), format="rgb24")):
            c.mux(packet)
    for packet in s.encode():
        c.mux(packet)
    c.close()


def make_tiny_dataset(root: Path, n: int = 24, *, modalities=("image", "text", "audio", "points"), val_every: int = 4,
                      missing: dict | None = None, corrupt: dict | None = None, seed: int = 0) -> Path:
    """Write ``n`` samples under ``root`` and a ``manifest.jsonl``; returns the manifest path.

    ``missing``: {modality: [sample numbers without it]}; ``corrupt``: {modality: [sample numbers whose file is
    garbage]}. Every ``val_every``-th sample is in the ``val`` split.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    missing, corrupt = missing or {}, corrupt or {}
    rows = []
    for i in range(n):
        k = i % len(CLASSES)
        name, rgb, freq = CLASSES[k]
        row = {"id": f"s{i:03d}", "label": name, "split": "val" if i % val_every == val_every - 1 else "train"}
        for m in modalities:
            if i in missing.get(m, ()):
                continue
            if m == "text":
                row["text"] = f"a {name} thing number {i % 3}"
                continue
            ext = {"image": "png", "audio": "wav", "points": "npy", "video": "mp4"}[m]
            rel = f"{m}/{row['id']}.{ext}"
            (root / m).mkdir(exist_ok=True)
            if i in corrupt.get(m, ()):
                (root / rel).write_bytes(b"this is not a real file")
            else:
                {"image": lambda p: _png(p, rgb, rng), "audio": lambda p: _wav(p, freq, rng),
                 "points": lambda p: _points(p, k, rng), "video": lambda p: _video(p, rgb, rng)}[m](root / rel)
            row[m] = rel
        rows.append(row)
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
