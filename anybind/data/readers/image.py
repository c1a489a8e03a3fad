"""Image files -> 8-bit RGB PIL images (PNG, JPEG, WebP, BMP, TIFF, GIF)."""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..files import check_file
from ..limits import LIMITS, limit_hint
from ..pixels import to_rgb

__all__ = ["read_image"]


def read_image(path: str | Path, *, draft: int | None = None):
    """Decode PNG, JPEG, WebP, BMP, TIFF or GIF (first frame) into an 8-bit RGB PIL image.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted to RGB and
    transparency is composited over white. The pixel count the header declares is checked against
    ``LIMITS.max_image_pixels`` before anything is decoded (decompression bombs).

    ``draft=S``: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg scales while decoding, several times
    faster) as long as both sides stay at least ``S`` pixels; the image transform asks for this with its
    ``image_size``, since it shrinks the picture to that size anyway. Other formats ignore it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_file(path, "image")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > LIMITS.max_image_pixels:
                raise InputError(path, "image", f"header declares {width}x{height} = {width * height} pixels, over "
                                                f"the {limit_hint('max_image_pixels')}")
            img.seek(0)  # first frame of animations
            if draft and img.format == "JPEG" and min(width, height) >= 2 * int(draft):
                img.draft(None, (int(draft), int(draft)))  # the smallest DCT scale keeping both sides >= draft
            img.load()  # decode now, so a truncated file fails here, not later in a worker
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(path, "image", "not a recognised image format (expected PNG, JPEG, WebP, BMP, TIFF or "
                                        "GIF)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(path, "image", f"{exc} ({limit_hint('max_image_pixels')})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, "image", f"truncated or corrupt image ({exc})") from exc
    if rgb.width == 0 or rgb.height == 0:
        raise InputError(path, "image", f"image has no pixels ({rgb.width}x{rgb.height})")
    return rgb
