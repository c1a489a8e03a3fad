"""Small previews of indexed items: a thumbnail for an image, a poster frame for a video, a point cloud rendered
to PNG, a spectrogram (with its waveform) for a sound, a card for a text.

Previews are drawn from the item's own file with anybind's readers (so the input limits apply), with matplotlib's
Agg canvas (no display, no pyplot state shared between threads), and kept in a :class:`PreviewCache`: an LRU in
memory and, when given a folder, files on disk written atomically.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes

PNG, JPEG = "image/png", "image/jpeg"
AUDIO_PREVIEW_SECONDS = 10.0  # a sound's preview shows its first ten seconds
POINTS_PREVIEW_MAX = 4096  # points drawn


def render_preview(modality: str, source: Any, meta: dict | None = None, *, size: int = 256) -> tuple[bytes, str]:
    """``(bytes, media type)`` of the preview of an item of ``modality`` stored at ``source``."""
    meta = meta or {}
    if modality == "image":
        return _image_preview(source, size)
    if modality == "video":
        return _video_preview(source, size)
    if modality == "points":
        return _points_preview(source, size)
    if modality == "audio":
        return _audio_preview(source, size)
    text = meta.get("text") or (source if isinstance(source, str) else None)
    if modality == "text" and text:
        if _is_text_file(text):
            from ..data.readers import read_text

            text = read_text(text)
        return _card(str(text), "text", size)
    return _card(f"no preview for {modality} items", modality, size)


def _is_text_file(value: str) -> bool:
    return value.lower().endswith(".txt") and "\n" not in value and Path(value).is_file()


def _fit(img, size: int):
    """Fit ``img`` in a ``size`` square, enlarging small images too (pixel art stays sharp)."""
    from PIL import Image

    scale = size / max(img.width, img.height)
    resample = Image.NEAREST if scale >= 2 else Image.BICUBIC
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _image_preview(source, size: int) -> tuple[bytes, str]:
    from ..modality import get_modality

    return _jpeg(_fit(get_modality("image").read(source), size)), JPEG


def _video_preview(source, size: int) -> tuple[bytes, str]:
    from PIL import Image

    from ..modality import get_modality

    video = get_modality("video").read(source)
    try:
        frame = video.get_frames([max(0, int(video.num_frames) // 2)])[0]  # the middle frame: first ones are often black
    finally:
        video.close()
    return _jpeg(_fit(Image.fromarray(np.asarray(frame)), size)), JPEG


def _figure(size: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _points_preview(source, size: int) -> tuple[bytes, str]:
    from ..modality import get_modality

    pts = np.asarray(get_modality("points").read(source), dtype=np.float32)
    if len(pts) > POINTS_PREVIEW_MAX:  # an even thinning keeps the shape
        pts = pts[np.linspace(0, len(pts) - 1, POINTS_PREVIEW_MAX).astype(np.int64)]
    xyz = pts[:, :3] - pts[:, :3].mean(0)
    xyz /= max(float(np.abs(xyz).max()), 1e-9)
    colors = np.clip(pts[:, 3:6], 0, 1) if pts.shape[1] >= 6 else None
    fig = _figure(size)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=max(1.0, 3000 / max(len(xyz), 1) ** 0.8),
               c=colors if colors is not None else xyz[:, 2], cmap=None if colors is not None else "viridis",
               depthshade=True, linewidths=0)
    ax.view_init(elev=20, azim=35)
    lim = (-1, 1)
    ax.set_xlim(lim), ax.set_ylim(lim), ax.set_zlim(lim)
    ax.set_axis_off()
    return _png(fig), PNG


def _audio_preview(source, size: int) -> tuple[bytes, str]:
    from ..modality import get_modality

    audio = get_modality("audio").read(source)
    sr = int(audio.sample_rate)
    wave = audio.read(0, int(AUDIO_PREVIEW_SECONDS * sr)).numpy().mean(0)
    fig = _figure(size)
    top = fig.add_axes((0, 0.78, 1, 0.22))
    t = np.arange(len(wave)) / sr
    top.plot(t, wave, linewidth=0.6, color="#1f6feb")
    top.set_xlim(0, max(t[-1] if len(t) else 1.0, 1e-3))
    top.set_axis_off()
    spec = fig.add_axes((0, 0, 1, 0.76))
    n_fft = 512 if sr >= 16000 else 256
    if len(wave) >= n_fft:
        with np.errstate(divide="ignore"):  # silence has zero power: log10(0) is -inf, drawn as the floor colour
            spec.specgram(wave, NFFT=n_fft, Fs=sr, noverlap=n_fft * 3 // 4, cmap="magma")
    spec.set_axis_off()
    return _png(fig), PNG


def _card(text: str, label: str, size: int) -> tuple[bytes, str]:
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.rectangle([1, 1, size - 2, size - 2], outline="grey")
    draw.text((8, 6), f"[{label}]", fill="dimgray", font=font)
    lines = textwrap.wrap(text, max(8, size // 7), break_long_words=True) or [text[: max(8, size // 7)]]
    for i, line in enumerate(lines[: max(1, (size - 30) // 14)]):
        draw.text((8, 24 + 14 * i), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue(), PNG


class PreviewCache:
    """Previews by key: an LRU in memory (``max_items``, ``max_bytes``) and, with ``folder``, files on disk."""

    def __init__(self, folder: str | Path | None = None, *, max_items: int = 1024, max_bytes: int = 64 << 20):
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.max_items, self.max_bytes = int(max_items), int(max_bytes)
        self._mem: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def _name(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def get(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                return self._mem[key]
        if self.folder is not None:
            for ext, media in ((".png", PNG), (".jpg", JPEG)):
                f = self.folder / (self._name(key) + ext)
                if f.is_file():
                    value = (f.read_bytes(), media)
                    self._remember(key, value)
                    with self._lock:
                        self.hits += 1
                    return value
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, value: tuple[bytes, str]) -> None:
        self._remember(key, value)
        if self.folder is not None:
            ext = ".png" if value[1] == PNG else ".jpg"
            atomic_write_bytes(self.folder / (self._name(key) + ext), value[0])

    def _remember(self, key: str, value: tuple[bytes, str]) -> None:
        with self._lock:
            if key in self._mem:
                self._bytes -= len(self._mem.pop(key)[0])
            self._mem[key] = value
            self._bytes += len(value[0])
            while self._mem and (len(self._mem) > self.max_items or self._bytes > self.max_bytes):
                _, old = self._mem.popitem(last=False)
                self._bytes -= len(old[0])

    def __len__(self) -> int:
        return len(self._mem)


def preview_error(key: str, modality: str, exc: Exception) -> InputError:
    """The error of a preview that could not be drawn, naming the item (not the server's path)."""
    problem = exc.problem if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return InputError(key, modality, f"no preview: {problem}")
