"""Tiny generated files and a tiny model for the retrieval tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TEST_ENCODERS = {"image": "image_vit_test", "text": "text_transformer_test", "audio": "audio_vit_test",
                 "points": "points_transformer_test", "video": "video_vit_test"}
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def tiny_model(modalities=("image", "text", "audio", "points")):
    import anybind
    import torch

    torch.manual_seed(0)
    return anybind.create_model({m: TEST_ENCODERS[m] for m in modalities})


def write_image(path: Path, rgb, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb)[None, None] + rng.integers(-20, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def write_wav(path: Path, freq: float, seconds: float = 0.3, sr: int = 16000) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def write_points(path: Path, scale: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.save(path, (rng.standard_normal((40, 3)) * scale).astype(np.float32))
    return path


def write_video(path: Path, level: int, frames: int = 8) -> Path:
    import av

    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=8)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (level + 10 * i) % 256, np.uint8), format="rgb24")
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def make_collection(root: Path, *, per_class: int = 2, corrupt: bool = True) -> Path:
    """A manifest with image/text/audio/points samples of three labelled classes (+ one unreadable image)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    (root / "pts").mkdir(exist_ok=True)
    rows = []
    for c, (name, rgb) in enumerate(COLORS.items()):
        for j in range(per_class):
            sid = f"{name}-{j}"
            write_image(root / "img" / f"{sid}.png", rgb, seed=10 * c + j)
            write_wav(root / "wav" / f"{sid}.wav", 300 + 400 * c + 20 * j)
            write_points(root / "pts" / f"{sid}.npy", 0.5 + c, seed=10 * c + j)
            row = {"id": sid, "label": name, "image": f"img/{sid}.png", "text": f"a {name} thing number {j}",
                   "audio": f"wav/{sid}.wav", "split": "test"}
            if j == 0:
                row["points"] = f"pts/{sid}.npy"
            rows.append(row)
    if corrupt:
        (root / "img" / "broken.png").write_bytes(b"this is not a png")
        rows.append({"id": "broken", "label": "red", "image": "img/broken.png", "text": "a broken red thing", "split": "test"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def make_collection_with_videos(root: Path, *, captions: bool = True) -> Path:
    """:func:`make_collection` (readable items only) plus two videos ``v0``/``v1`` of a dark and a bright grey, each
    with the caption ``a video <i>`` when ``captions``; the manifest's path."""
    manifest = make_collection(root, corrupt=False)
    (root / "vid").mkdir(exist_ok=True)
    lines = manifest.read_text().splitlines()
    for i, level in enumerate((40, 200)):
        write_video(root / "vid" / f"v{i}.mp4", level)
        lines.append(json.dumps({"id": f"v{i}", "video": f"vid/v{i}.mp4", **({"text": f"a video {i}"} if captions else {})}))
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
