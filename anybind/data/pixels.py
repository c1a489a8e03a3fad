"""Pixel-mode conversion of decoded PIL images (no file access): any mode -> 8-bit RGB.

Shared by the image reader (files) and the image transform (PIL images handed over in memory).
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_rgb"]

_WHITE = (255, 255, 255)


def _to_8bit(img):
    """Integer (``I``, ``I;16*``) and float (``F``) images -> 8-bit ``L``."""
    from PIL import Image

    a = np.asarray(img)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:  # float images in [0, 1]
            a = a * 255.0
        elif hi > lo:  # anything else: stretch the observed range
            a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = a.astype(np.int64)
        if img.mode.startswith("I;16") or a.max() > 255:  # 16-bit samples
            a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img):
    """Any PIL image -> 8-bit RGB. Transparent pixels are composited over white."""
    from PIL import Image

    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")
