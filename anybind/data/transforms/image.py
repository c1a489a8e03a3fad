"""Image transform: PIL / uint8 / float image -> normalized float32 ``(3, S, S)``."""

from __future__ import annotations

from typing import Any

import torch

from ...constants import CLIP_MEAN, CLIP_STD
from ...errors import ContractError, InputError
from ..pixels import to_rgb
from ._common import as_tensor, describe, positive_int, read_contract, triple

__all__ = ["ImageTransform", "check_frames_tensor", "image_transform"]


def interpolation_mode(name: str):
    from torchvision.transforms.v2 import InterpolationMode

    try:
        return InterpolationMode(name.lower())
    except ValueError:
        raise ValueError(f"unknown interpolation {name!r} (use bicubic, bilinear or nearest)") from None


def check_frames_tensor(x: torch.Tensor, modality: str, source: str | None, layout: str) -> torch.Tensor:
    """Validate ``(..., C, H, W)`` image data (uint8, or float in [0, 1]); 1 channel becomes 3."""
    if x.shape[-3] not in (1, 3):
        hint = " (channels last? use .permute to put channels first)" if x.shape[-1] in (1, 3) else ""
        raise InputError(source, modality, f"expected {layout} with 1 or 3 channels, got {describe(x)}{hint}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise InputError(source, modality, f"image has no pixels: {describe(x)}")
    if x.dtype == torch.uint8:
        pass
    elif x.is_floating_point():
        if not torch.isfinite(x).all():
            raise InputError(source, modality, "pixel values contain NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(source, modality, f"float pixels must lie in [0, 1], found [{lo:.3g}, {hi:.3g}] "
                                               "(already normalized, or 0-255 floats?)")
        x = x.float()
    else:
        raise InputError(source, modality, f"expected uint8 or float pixels, got {describe(x)}")
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if x.shape[-3] == 1 else x


class Frames:
    """Resize the shorter side, center-crop, scale to [0, 1] and normalize a batch of (..., 3, H, W) tensors."""

    def __init__(self, image_size: int, mean, std, interpolation: str):
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        interpolation_mode(interpolation)  # fail at construction on a bad name

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float [0, 1] ``(N, 3, H, W)`` -> normalized float32 ``(N, 3, S, S)``."""
        import torchvision.transforms.v2.functional as TF

        mode = interpolation_mode(self.interpolation)
        x = TF.resize(x, [self.image_size], interpolation=mode, antialias=True)  # uint8 stays uint8 (fast path)
        x = TF.center_crop(x, [self.image_size, self.image_size])
        x = x.float().div(255) if x.dtype == torch.uint8 else x.clamp(0.0, 1.0)
        return TF.normalize(x, self.mean, self.std)

    def pil(self, img) -> torch.Tensor:
        """PIL RGB image -> normalized float32 ``(3, S, S)``, resized by PIL (the reference CLIP/ImageBind path)."""
        import torchvision.transforms.v2.functional as TF

        img = TF.resize(img, [self.image_size], interpolation=interpolation_mode(self.interpolation))
        img = TF.center_crop(img, [self.image_size, self.image_size])
        x = TF.pil_to_tensor(img).float().div(255)
        return TF.normalize(x, self.mean, self.std)


class ImageTransform(Frames):
    """PIL image, uint8 ``(3|1, H, W)`` or float ``(3|1, H, W)`` in [0, 1] -> float32 ``(3, S, S)``.

    Shorter side resized to ``image_size`` (antialiased), center crop, scaled to [0, 1], normalized.
    """

    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, interpolation: str = "bicubic"):
        super().__init__(image_size, mean, std, interpolation)

    @property
    def reader_options(self) -> dict:
        """Asks the image reader to decode JPEGs at a reduced size no smaller than ``image_size`` (the resize below
        shrinks them to that anyway): a 640x480 photo for 224 px decodes at 320x240, about three times faster."""
        return {"draft": self.image_size}

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        from PIL import Image

        if isinstance(raw, Image.Image):
            if raw.width == 0 or raw.height == 0:
                raise InputError(source, "image", f"image has no pixels ({raw.width}x{raw.height})")
            return self.pil(to_rgb(raw))
        raw = as_tensor(raw)
        if not isinstance(raw, torch.Tensor):
            raise InputError(source, "image", f"expected a PIL image or a (3, H, W) tensor, got {describe(raw)}")
        if raw.ndim != 3:
            raise InputError(source, "image", f"expected one (3, H, W) image, got {describe(raw)}")
        x = check_frames_tensor(raw, "image", source, "(3, H, W)")
        return self.tensor(x.unsqueeze(0))[0]

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, interpolation={self.interpolation!r})"



def image_transform(contract: dict) -> ImageTransform:
    """Contract keys: ``image_size``, ``mean``, ``std``, ``interpolation`` (all required)."""
    name = "image_transform"
    c = read_contract(contract, name, ("image_size", "mean", "std", "interpolation"))
    return ImageTransform(image_size=positive_int(c["image_size"], "image_size", name),
                          mean=triple(c["mean"], "mean", name), std=triple(c["std"], "std", name),
                          interpolation=interpolation_name(c["interpolation"], name))


def interpolation_name(value: Any, transform: str) -> str:
    if not isinstance(value, str):
        raise ContractError(f"{transform}: contract key 'interpolation' must be a name, got {value!r}")
    try:
        interpolation_mode(value)
    except ValueError as exc:
        raise ContractError(f"{transform}: {exc}") from None
    return value
