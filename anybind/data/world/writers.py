"""File writers of the world: PNG, 16-bit PCM WAV, MP4 (PyAV) and NPY. Each output is byte-deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image, mode="RGB").save(path, format="PNG")


def write_audio(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    """Mono float waveform in [-1, 1] -> 16-bit PCM WAV (the stdlib writer: several times faster than libsndfile
    for one-second files)."""
    import wave

    pcm = np.round(np.clip(wav, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def write_video(path: Path, frames: np.ndarray, *, fps: int, codec: str = "mpeg4") -> None:
    """``frames`` (T, H, W, 3) uint8 -> MP4 (yuv420p), single-threaded.

    The default MPEG-4 Part 2 encoder gives byte-identical files for identical frames; libx264 (allowed, smaller
    files) does not on every FFmpeg build, which breaks the world's byte-level reproducibility.
    """
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i  # explicit timestamps: unset ones make the encoder's rate control irreproducible
            container.mux(stream.encode(vf))
        container.mux(stream.encode())


def write_points(path: Path, points: np.ndarray) -> None:
    np.save(path, points.astype(np.float32), allow_pickle=False)
