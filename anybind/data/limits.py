"""Per-item work limits: how much of one file a reader or transform may decode before it refuses.

One hostile or broken file (a 100 MB caption, a 10-hour WAV, a video with one keyframe in a million frames, a PNG
whose header declares 100000 x 100000 pixels) must not take a whole machine. Every reader and transform reads
only what the encoder's input contract keeps, and refuses past the limits below with an
:class:`~anybind.errors.InputError` naming the file, the modality and the limit. ``docs/input-limits.md`` lists
them with their reasons.

Each limit has a default, an environment variable (read when this module is first imported, so spawned
DataLoader workers see it too) and a setter::

    from anybind.data.limits import LIMITS, set_limits
    set_limits(max_image_pixels=200_000_000)   # also exported to the environment for new worker processes
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["LIMITS", "InputLimits", "limit_hint", "set_limits"]

_ENV_PREFIX = "ANYBIND_"


@dataclass
class InputLimits:
    """The per-item limits (see the module docstring and ``docs/input-limits.md``)."""

    max_text_bytes: int = 1 << 20  # a .txt file: bytes read (the rest is never read)
    max_text_chars: int = 16384  # characters tokenized (CLIP keeps 77 tokens; 16k characters cover any caption)
    max_image_pixels: int = 64 << 20  # width * height declared by an image header (decompression bombs)
    max_audio_decode_samples: int = 64 << 20  # samples * channels decoded whole, for formats that cannot seek
    max_video_frame_pixels: int = 8192 * 4320  # width * height of a video frame (8K)
    max_video_decode_frames: int = 2000  # frames decoded to reach one item's kept frames (sparse keyframes)
    max_points_file_bytes: int = 256 << 20  # a point-cloud / mesh file (binary PLY, .npy, .npz members)
    max_points_text_bytes: int = 32 << 20  # a text point-cloud / mesh file (.xyz, .txt, .pts, .off, .obj)
    max_points: int = 16 << 20  # points (or mesh vertices) in one file
    max_tensor_file_bytes: int = 256 << 20  # a preprocessed .pt / .npy / .npz file

    @staticmethod
    def env_name(name: str) -> str:
        return _ENV_PREFIX + name.upper()


def _from_env() -> InputLimits:
    limits = InputLimits()
    for f in fields(InputLimits):
        raw = os.environ.get(InputLimits.env_name(f.name))
        if raw is None or not raw.strip():
            continue
        try:
            value = int(float(raw))
        except ValueError:
            raise ValueError(f"{InputLimits.env_name(f.name)}={raw!r} is not a number") from None
        if value <= 0:
            raise ValueError(f"{InputLimits.env_name(f.name)}={raw!r} must be positive")
        setattr(limits, f.name, value)
    return limits


LIMITS = _from_env()


def set_limits(**values: int) -> InputLimits:
    """Change limits for this process and for worker processes started after the call; returns :data:`LIMITS`."""
    known = {f.name for f in fields(InputLimits)}
    for name, value in values.items():
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"unknown input limit {name!r}{hint} (known: {', '.join(sorted(known))})")
        value = int(value)
        if value <= 0:
            raise ValueError(f"input limit {name} must be positive, got {value}")
        setattr(LIMITS, name, value)
        os.environ[InputLimits.env_name(name)] = str(value)
    return LIMITS


def limit_hint(name: str) -> str:
    """``"limit max_points=16777216 (ANYBIND_MAX_POINTS)"``: how an error message names the limit it hit."""
    return f"limit {name}={getattr(LIMITS, name)} (raise it with {InputLimits.env_name(name)} or set_limits)"
