"""Tiny generated test assets (images, audio, video, point clouds) and the shared-data location.

Every helper writes into a directory the test owns (``tmp_path``) and returns the path it wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGEBIND_FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "imagebind_tiny"


def gradient_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    """uint8 (h, w, 3) image whose channels vary differently, so orientation and channel order are testable."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w - 2)],
                    axis=-1).astype(np.uint8)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (32, 24), **save_kw) -> Path:
    """Write a gradient image in PIL ``mode`` (RGB, RGBA, L, LA, P, 1, CMYK, I;16, F) to ``path``."""
    from PIL import Image

    w, h = size
    rgb = Image.fromarray(gradient_rgb(h, w))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255.0)
    elif mode == "RGBA":
        a = np.asarray(rgb)
        alpha = np.full(a.shape[:2] + (1,), 255, np.uint8)
        alpha[:, : w // 2] = 0  # left half fully transparent
        img = Image.fromarray(np.concatenate([a, alpha], axis=-1), mode="RGBA")
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    else:
        img = rgb.convert(mode)
    img.save(path, **save_kw)
    return path


def write_gif(path: Path, frames: int = 3, size: tuple[int, int] = (16, 12)) -> Path:
    """Animated GIF whose first frame is red and later frames blue."""
    from PIL import Image

    colours = [(255, 0, 0)] + [(0, 0, 255)] * (frames - 1)
    imgs = [Image.new("RGB", size, c).convert("P") for c in colours]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    return path


def tone(seconds: float, sample_rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """float32 (samples, channels) sine, amplitude 0.5; channel c has frequency freq * (c + 1)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float = 0.5, sample_rate: int = 16000, channels: int = 1, freq: float = 440.0,
                **kw) -> Path:
    import soundfile as sf

    sf.write(str(path), tone(seconds, sample_rate, channels, freq), sample_rate, **kw)
    return path


_VIDEO_CODECS = {".mp4": "mpeg4", ".avi": "mpeg4", ".mkv": "mpeg4", ".webm": "libvpx", ".mov": "mpeg4"}


def video_frames(frames: int, size: tuple[int, int] = (48, 32), start: int = 20) -> np.ndarray:
    """uint8 (frames, h, w, 3): frame t is a flat grey of level start + 20 * t (mod 240), so indices are readable."""
    w, h = size
    levels = (start + 20 * np.arange(frames)) % 240
    return np.broadcast_to(levels[:, None, None, None], (frames, h, w, 3)).astype(np.uint8).copy()


def write_video(path: Path, frames: int = 12, fps: int = 12, size: tuple[int, int] = (48, 32), start: int = 20) -> Path:
    """A tiny video (codec chosen by extension) whose frame t is flat grey at level start + 20 * t."""
    import av

    codec = _VIDEO_CODECS[path.suffix.lower()]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for arr in video_frames(frames, size, start):
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only_container(path: Path, seconds: float = 0.2) -> Path:
    """A Matroska/WebM file holding only an audio stream (a "video" without frames)."""
    import av

    codec, rate = ("libopus", 48000) if path.suffix == ".webm" else ("flac", 16000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = stream.codec_context.format.name
        n = int(seconds * rate)
        step = stream.codec_context.frame_size or n
        samples = (0.1 * np.sin(np.arange(n) / 10)).astype(np.float32)
        for start in range(0, n, step):
            chunk = np.pad(samples[start:start + step], (0, max(0, start + step - n)))
            data = (chunk * 32767).astype(np.int16) if fmt == "s16" else chunk
            frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# --------------------------------------------------------------------------------------------- point clouds

def cube_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Unit cube centred at the origin: 8 vertices, 6 quads."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=np.float64)
    quads = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
    return v, quads


def random_cloud(n: int = 100, rgb: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)) * 2.0 + 5.0
    if not rgb:
        return xyz.astype(np.float32)
    return np.concatenate([xyz, rng.uniform(size=(n, 3))], axis=1).astype(np.float32)


def write_ply(path: Path, xyz: np.ndarray, rgb_u8: np.ndarray | None = None, faces: np.ndarray | None = None,
              fmt: str = "ascii") -> Path:
    """PLY writer: ``fmt`` is ascii, binary_little_endian or binary_big_endian; rgb as uchar; faces as lists."""
    n = len(xyz)
    header = ["ply", f"format {fmt} 1.0", "comment anybind test", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if rgb_u8 is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")
    if fmt == "ascii":
        rows = []
        for i in range(n):
            row = " ".join(f"{c:.6f}" for c in xyz[i])
            if rgb_u8 is not None:
                row += " " + " ".join(str(int(c)) for c in rgb_u8[i])
            rows.append(row)
        if faces is not None:
            rows += [" ".join(str(int(k)) for k in [len(f), *f]) for f in faces]
        body = ("\n".join(rows) + "\n").encode("ascii")
    else:
        e = "<" if fmt == "binary_little_endian" else ">"
        fields = [("x", e + "f4"), ("y", e + "f4"), ("z", e + "f4")]
        if rgb_u8 is not None:
            fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        rec = np.zeros(n, dtype=fields)
        rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        if rgb_u8 is not None:
            rec["red"], rec["green"], rec["blue"] = rgb_u8[:, 0], rgb_u8[:, 1], rgb_u8[:, 2]
        body = rec.tobytes()
        if faces is not None:
            k = faces.shape[1]
            frec = np.zeros(len(faces), dtype=[("n", "u1"), ("v", e + "i4", (k,))])
            frec["n"], frec["v"] = k, faces
            body += frec.tobytes()
    path.write_bytes(head + body)
    return path


def write_off(path: Path, v: np.ndarray, faces: np.ndarray, glued_header: bool = False) -> Path:
    counts = f"{len(v)} {len(faces)} 0"
    lines = [f"OFF{counts}"] if glued_header else ["OFF", "# a comment", counts]
    lines += [" ".join(f"{c:g}" for c in p) for p in v]
    lines += [" ".join(str(int(k)) for k in [len(f), *f]) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_obj(path: Path, v: np.ndarray, faces: np.ndarray, slashes: bool = True) -> Path:
    lines = ["# cube", "o cube"] + [f"v {p[0]:g} {p[1]:g} {p[2]:g}" for p in v] + ["vn 0 0 1"]
    for f in faces:
        lines.append("f " + " ".join(f"{k + 1}//1" if slashes else str(k + 1) for k in f))
    path.write_text("\n".join(lines) + "\n")
    return path


def truncate(path: Path, keep: float | int = 0.5) -> Path:
    """Cut ``path`` to a fraction (float) or a byte count (int) of its size."""
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:n])
    return path


# Complete input contracts with the built-in encoders' reference values (transform factories read contracts strictly).
REFERENCE_CONTRACTS = {
    "image": {"image_size": 224, "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic"},
    "text": {"context_length": 77, "tokenizer": "clip_bpe"},
    "audio": {"sample_rate": 16000, "num_mel_bins": 128, "target_length": 204, "clip_duration": 2.0, "clips": 3,
              "mean": -4.268, "std": 9.138},
    "video": {"image_size": 224, "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711], "frames": 2, "clips": 5, "clip_duration": 2.0},
    "points": {"num_points": 1024, "channels": 3, "min_points": 16},
}


def contract(modality: str, **overrides) -> dict:
    """The reference contract of ``modality`` with ``overrides`` applied."""
    return {**REFERENCE_CONTRACTS[modality], **overrides}
