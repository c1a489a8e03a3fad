"""Contact sheets: search hits drawn as a PNG grid, every modality as a picture of itself.

* image: the picture, fitted to the tile;
* video: three frames (at 1/6, 1/2 and 5/6 of its length), stacked;
* audio: a log-mel spectrogram of its first seconds (time left to right, low pitches at the bottom);
* points: the cloud normalised to the unit sphere and drawn from above and in front, near points brighter
  (its own colours when it has them);
* text: a card holding the text (or the start of the ``.txt`` file).

Each tile is captioned with its rank, its score and the item's name (the file name, not its path; wrapped to two
lines and shortened in the middle when longer), and nothing drawn leaves its tile. A file that cannot be read
gets a card saying why instead of its picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .index import Hit

__all__ = ["audio_thumbnail", "contact_sheet", "fit_lines", "points_thumbnail", "tile_image", "video_thumbnail"]

CAPTION_LINES = 3  # rank + score, then the name on up to two lines
LINE_HEIGHT = 13
AUDIO_SECONDS = 10.0
VIDEO_FRAMES = 3
MAX_DRAWN_POINTS = 6000

# a dark-to-bright colour ramp (black, purple, red, orange, pale yellow) for spectrograms and depth
_RAMP = np.array([[0, 0, 4], [60, 15, 110], [150, 40, 110], [230, 90, 60], [252, 200, 95], [252, 253, 191]], float)


def _colorize(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] -> uint8 RGB through :data:`_RAMP`."""
    v = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_RAMP) - 2)
    frac = (v - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def _fit(img, width: int, height: int):
    """``img`` scaled (up or down) to fit ``width x height``, aspect kept."""
    from PIL import Image

    scale = min(width / img.width, height / img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)


def _canvas(size: int):
    from PIL import Image

    return Image.new("RGB", (size, size), "white")


def _paste_center(canvas, img) -> None:
    canvas.paste(img, ((canvas.width - img.width) // 2, (canvas.height - img.height) // 2))


# ------------------------------------------------------------------------------------------------ per modality
def image_thumbnail(source: str, size: int):
    from ..modality import get_modality

    canvas = _canvas(size)
    _paste_center(canvas, _fit(get_modality("image").read(source).convert("RGB"), size - 4, size - 4))
    return canvas


def video_thumbnail(source: str, size: int, frames: int = VIDEO_FRAMES):
    """``frames`` frames spread over the video, stacked top to bottom (one batched decode)."""
    from PIL import Image

    from ..modality import get_modality

    video = get_modality("video").read(source)
    try:
        n = int(video.num_frames)
        idx = sorted({min(n - 1, int((k + 0.5) * n / frames)) for k in range(frames)})
        decoded = video.get_frames(idx).numpy()
    finally:
        close = getattr(video, "close", None)
        if close is not None:
            close()
    canvas = _canvas(size)
    slot = (size - 4) // frames
    for k, frame in enumerate(decoded):
        img = _fit(Image.fromarray(np.ascontiguousarray(frame)).convert("RGB"), size - 4, slot - 2)
        canvas.paste(img, ((size - img.width) // 2, 2 + k * slot + (slot - img.height) // 2))
    return canvas


def audio_thumbnail(source: str, size: int, seconds: float = AUDIO_SECONDS):
    """A log-mel spectrogram of the first ``seconds`` of the file, coloured, ``size x size``."""
    import torch
    import torchaudio.functional as AF
    from PIL import Image

    from ..modality import get_modality

    audio = get_modality("audio").read(source)
    sr = int(audio.sample_rate)
    wave = audio.read(0, int(seconds * sr)).float().mean(dim=0)
    if wave.numel() < 64:
        raise InputError(source, "audio", "too short to draw")
    n_fft = 1024 if sr > 24000 else 512
    hop = max(16, wave.numel() // max(32, size))  # about one spectrogram column per pixel
    spec = torch.stft(wave, n_fft=min(n_fft, max(64, wave.numel())), hop_length=hop,
                      window=torch.hann_window(min(n_fft, max(64, wave.numel()))), return_complex=True).abs().pow(2)
    mels = AF.melscale_fbanks(spec.shape[0], 0.0, sr / 2, n_mels=64, sample_rate=sr)
    db = 10 * torch.log10((mels.T @ spec).clamp(min=1e-10))
    db = (db - (db.max() - 80)).clamp(min=0) / 80  # the top 80 dB, scaled to [0, 1]
    rgb = _colorize(db.flip(0).numpy())  # low frequencies at the bottom
    canvas = _canvas(size)
    canvas.paste(Image.fromarray(rgb).resize((size - 4, size - 4), Image.BILINEAR), (2, 2))
    return canvas


def points_thumbnail(source: str, size: int, yaw: float = 35.0, pitch: float = 25.0):
    """The cloud seen from above and in front (orthographic), near points brighter; its colours when it has them."""
    from ..modality import get_modality

    cloud = np.asarray(get_modality("points").read(source), dtype=np.float64)
    if len(cloud) > MAX_DRAWN_POINTS:  # evenly spaced rows: a fixed, spread-out subset
        cloud = cloud[np.linspace(0, len(cloud) - 1, MAX_DRAWN_POINTS).astype(int)]
    xyz = cloud[:, :3] - cloud[:, :3].mean(0)
    xyz /= max(float(np.linalg.norm(xyz, axis=1).max()), 1e-9)
    a, b = np.radians(yaw), np.radians(pitch)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    # points files put "up" on y (most meshes) or z (scans); draw the axis with the larger spread upwards
    if np.ptp(xyz[:, 2]) > 1.5 * np.ptp(xyz[:, 1]):
        xyz = xyz[:, [0, 2, 1]] * np.array([1, 1, -1])
    view = xyz @ turn.T @ tilt.T
    depth = (view[:, 2] - view[:, 2].min()) / max(float(np.ptp(view[:, 2])), 1e-9)  # 1 = nearest
    half = (size - 8) / 2
    px = np.clip(np.round(size / 2 + view[:, 0] * half), 1, size - 2).astype(int)
    py = np.clip(np.round(size / 2 - view[:, 1] * half), 1, size - 2).astype(int)
    shade = 0.35 + 0.65 * depth
    if cloud.shape[1] >= 6:
        colors = (cloud[:, 3:6] * 255 * shade[:, None]).clip(0, 255).astype(np.uint8)
    else:
        colors = _colorize(0.15 + 0.7 * depth)
    canvas = np.full((size, size, 3), 255, np.uint8)
    order = np.argsort(depth)  # far first: near points are drawn over them
    for dy in (0, 1):
        for dx in (0, 1):
            canvas[py[order] + dy, px[order] + dx] = colors[order]  # 2x2 dots
    from PIL import Image

    return Image.fromarray(canvas)


def _text_of(hit: Hit) -> str:
    text = hit.meta.get("text") or hit.source or hit.id
    if isinstance(text, str) and text.lower().endswith(".txt") and "\n" not in text and Path(text).is_file():
        with open(text, encoding="utf-8", errors="replace") as f:
            text = f.read(600)
    return str(text)


def _card(lines: Sequence[str], size: int, draw_font, heading: str | None = None):
    from PIL import ImageDraw

    canvas = _canvas(size)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([1, 1, size - 2, size - 2], outline="grey")
    y = 5
    if heading:
        draw.text((6, y), heading, fill="dimgray", font=draw_font)
        y += LINE_HEIGHT + 2
    for line in lines:
        if y + LINE_HEIGHT > size - 4:
            break
        draw.text((6, y), line, fill="black", font=draw_font)
        y += LINE_HEIGHT
    return canvas


_DRAWERS: dict[str, Callable[[str, int], object]] = {
    "image": image_thumbnail, "video": video_thumbnail, "audio": audio_thumbnail, "points": points_thumbnail,
}


def tile_image(hit: Hit, size: int, font=None):
    """The ``size x size`` picture of one hit (a card for text, for modalities without a drawer, and for files
    that cannot be read)."""
    font = font or _font()
    measure = _measure(font)
    drawer = _DRAWERS.get(hit.modality)
    if drawer is not None and hit.source:
        try:
            return drawer(str(hit.source), size)
        except (InputError, OSError, ValueError, RuntimeError) as exc:
            problem = exc.problem if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            return _card(fit_lines(f"cannot draw: {problem}", size - 12, 8, measure), size, font, f"[{hit.modality}]")
    return _card(fit_lines(_text_of(hit), size - 12, 9, measure, words=True), size, font, f"[{hit.modality}]")


# ---------------------------------------------------------------------------------------------------- text
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _measure(font) -> Callable[[str], float]:
    if hasattr(font, "getlength"):
        return font.getlength
    return lambda s: 6.0 * len(s)


def fit_lines(text: str, max_px: float, max_lines: int, measure: Callable[[str], float], *,
              words: bool = False) -> list[str]:
    """``text`` cut into at most ``max_lines`` lines no wider than ``max_px`` (as ``measure`` gives widths).

    ``words``: break between words (text cards); otherwise break anywhere, preferring after ``_ - . /`` (file
    names). What does not fit is shortened: a name keeps its start and its end (``Kevin_MacL...ugar_Plum.ogg``), a
    text ends with ``...``.
    """
    text = " ".join(str(text).split()) if words else str(text).replace("\n", " ")
    if not text:
        return []

    def lines_of(s: str) -> list[str]:
        out, line = [], ""
        tokens = s.split(" ") if words else list(s)
        for tok in tokens:
            cand = f"{line} {tok}" if words and line else line + tok
            if measure(cand) <= max_px or not line:
                while measure(cand) > max_px and len(cand) > 1:  # one token wider than a line: hard break
                    cut = len(cand) - 1
                    while cut > 1 and measure(cand[:cut]) > max_px:
                        cut -= 1
                    out.append(cand[:cut])
                    cand = cand[cut:]
                line = cand
                continue
            if not words:  # break after the last separator when it is not too far back
                at = max(line.rfind(c) for c in "_-./ ")
                if at >= len(line) // 2:
                    out.append(line[:at + 1])
                    line = line[at + 1:] + tok
                    continue
            out.append(line)
            line = tok
        if line:
            out.append(line)
        return out

    lines = lines_of(text)
    if len(lines) <= max_lines:
        return lines
    if words:
        kept = lines[:max_lines]
        last = kept[-1]
        while last and measure(last + "...") > max_px:
            last = last[:-1]
        return kept[:-1] + [last.rstrip() + "..."]
    budget = max_px * max_lines
    head, tail = len(text) // 2, len(text) - len(text) // 2
    while head + tail > 2:  # drop characters from the middle until the rest fits the lines
        short = text[:head] + "..." + text[len(text) - tail:]
        lines = lines_of(short)
        if len(lines) <= max_lines and measure(short) <= budget:
            return lines
        if head >= tail:
            head -= 1
        else:
            tail -= 1
    return lines_of(text[:1] + "...")[:max_lines]


def _name(hit: Hit) -> str:
    if hit.modality == "text" and not (hit.source and str(hit.source).lower().endswith(".txt")):
        return str(hit.id)
    return Path(str(hit.source)).name if hit.source else str(hit.id)


# --------------------------------------------------------------------------------------------------- sheet
def contact_sheet(hits: Sequence[Hit] | Mapping[str, Sequence[Hit]], path: str | Path, *, tile: int = 160,
                  columns: int = 5, title: str | None = None) -> Path:
    """Draw ``hits`` (a ranked list, or ``{modality: hits}`` with one block of rows per modality) as a PNG."""
    from PIL import Image, ImageDraw

    groups = dict(hits) if isinstance(hits, Mapping) else {"": list(hits)}
    font = _font()
    measure = _measure(font)
    longest = max((len(g) for g in groups.values()), default=0)
    cols = max(1, min(columns, longest or 1))
    caption_h = 4 + CAPTION_LINES * LINE_HEIGHT
    heading_h = LINE_HEIGHT + 8
    top = heading_h if title else 0
    labelled = len(groups) > 1 or "" not in groups
    height = top + sum((heading_h if labelled else 0) + max(1, -(-len(g) // cols)) * (tile + caption_h)
                       for g in groups.values())
    sheet = Image.new("RGB", (cols * tile, max(height, tile)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), (fit_lines(title, cols * tile - 8, 1, measure, words=True) or [""])[0], fill="black", font=font)
    y0 = top
    for modality, group in groups.items():
        if labelled:
            draw.rectangle([0, y0 + 2, cols * tile - 1, y0 + heading_h - 3], fill=(235, 235, 240))
            label = f"{modality}: top {len(group)}" if group else f"{modality}: no hits"
            draw.text((4, y0 + 4), label, fill="black", font=font)
            y0 += heading_h
        for n, hit in enumerate(group):
            x, y = (n % cols) * tile, y0 + (n // cols) * (tile + caption_h)
            sheet.paste(tile_image(hit, tile, font), (x, y))
            draw.text((x + 4, y + tile + 2), f"{n + 1}. {hit.score:.3f}", fill="black", font=font)
            for i, line in enumerate(fit_lines(_name(hit), tile - 8, CAPTION_LINES - 1, measure)):
                draw.text((x + 4, y + tile + 2 + LINE_HEIGHT * (i + 1)), line, fill="dimgray", font=font)
        y0 += max(1, -(-len(group) // cols)) * (tile + caption_h)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
