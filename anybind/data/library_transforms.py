"""Eval preprocessing of pretrained towers from model libraries (open_clip, timm), driven by the input contract.

A library tower records its preprocessing as plain contract keys, so a checkpoint carries it and anybind's own
transform reproduces the library's eval transform (bit for bit on PIL images):

* ``resize_mode``: ``shortest`` (shorter side to ``resize_size``; a non-square ``resize_size`` keeps the aspect
  ratio so that both sides cover it), ``longest`` (longer side to fit, the rest padded with ``fill``) or ``squash``
  (both sides to ``resize_size``, aspect ratio not kept);
* ``resize_size``: an int or ``[h, w]``; ``image_size``: the final crop, an int or ``[h, w]``;
* ``interpolation`` (``bicubic``, ``bilinear``...), ``mean``, ``std``, ``fill`` (0-255, one value or per channel).

open_clip's ``preprocess_cfg`` maps onto these keys one to one (``resize_size == image_size``); timm's data config
maps ``crop_pct`` to ``resize_size = floor(image_size / crop_pct)`` and ``crop_mode`` center / squash / border to
shortest / squash / longest. Text: :class:`OpenClipTokenizerTransform` tokenizes with ``open_clip.get_tokenizer``
(the BPE vocabulary ships with open_clip; nothing is downloaded).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..errors import ContractError, InputError
from .transforms._common import as_tensor, describe, positive_int, read_contract
from .transforms.image import interpolation_mode, check_frames_tensor
from .transforms.text import text_or_ids

RESIZE_MODES = ("shortest", "longest", "squash")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ValueError(f"an image size is an int or [h, w], got {size!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def resized_size(h: int, w: int, target: tuple[int, int], mode: str) -> list[int]:
    """Output ``[h, w]`` of the resize stage (torchvision's rule for a square shortest-side target, the libraries'
    keep-ratio rule otherwise)."""
    th, tw = target
    if mode == "squash":
        return [th, tw]
    if mode == "shortest" and th == tw:
        short, long = (h, w) if h <= w else (w, h)
        other = int(th * long / short)
        return [th, other] if h <= w else [other, th]
    ratio_h, ratio_w = h / th, w / tw
    ratio = max(ratio_h, ratio_w) if mode == "longest" else min(ratio_h, ratio_w)
    return [round(h / ratio), round(w / ratio)]


def crop_or_pad(img, size: tuple[int, int], fill):
    """Center crop to ``size``; sides smaller than ``size`` are first padded (centred) with ``fill``."""
    import torchvision.transforms.v2.functional as TF

    ch, cw = size
    _, h, w = TF.get_dimensions(img)
    if ch > h or cw > w:
        pad = [max(cw - w, 0) // 2, max(ch - h, 0) // 2, (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2]
        img = TF.pad(img, pad, fill=fill)
        _, h, w = TF.get_dimensions(img)
        if (h, w) == (ch, cw):
            return img
    return TF.crop(img, int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0)), ch, cw)


class LibraryImageTransform:
    """PIL image, uint8 ``(3|1, H, W)`` or float ``(3|1, H, W)`` in [0, 1] -> float32 ``(3, h, w)``.

    Resize (``resize_mode`` to ``resize_size``), center crop or pad to ``image_size``, scale to [0, 1], normalize.
    PIL images are resized by PIL, exactly as open_clip's and timm's eval transforms do; tensors by torchvision
    with antialiasing (within a few 1e-3 of the PIL path).
    """

    def __init__(self, image_size=224, resize_size=None, resize_mode: str = "shortest", mean=(0.5, 0.5, 0.5),
                 std=(0.5, 0.5, 0.5), interpolation: str = "bicubic", fill=0):
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.image_size = _pair(image_size)
        self.resize_size = _pair(resize_size if resize_size is not None else image_size)
        self.resize_mode = resize_mode
        self.mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
        self.std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * 3)]
        self.interpolation = interpolation
        interpolation_mode(interpolation)  # a bad name fails at construction
        self.fill = [int(f) for f in fill] if isinstance(fill, (list, tuple)) else int(fill)

    def _geometry(self, img, fill):
        import torchvision.transforms.v2.functional as TF

        _, h, w = TF.get_dimensions(img)
        size = resized_size(h, w, self.resize_size, self.resize_mode)
        img = TF.resize(img, size, interpolation=interpolation_mode(self.interpolation), antialias=True)
        return crop_or_pad(img, self.image_size, fill)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF
        from PIL import Image

        if isinstance(raw, Image.Image):
            from .pixels import to_rgb

            if raw.width == 0 or raw.height == 0:
                raise InputError(source, "image", f"image has no pixels ({raw.width}x{raw.height})")
            x = TF.pil_to_tensor(self._geometry(to_rgb(raw), self.fill)).float().div(255)
        else:
            raw = as_tensor(raw)
            if not isinstance(raw, torch.Tensor) or raw.ndim != 3:
                raise InputError(source, "image", f"expected a PIL image or one (3, H, W) image tensor, got "
                                                  f"{describe(raw)}")
            x = check_frames_tensor(raw, "image", source, "(3, H, W)")
            if x.dtype == torch.uint8:
                x = self._geometry(x, self.fill).float().div(255)
            else:
                fill = [f / 255 for f in self.fill] if isinstance(self.fill, list) else self.fill / 255
                x = self._geometry(x, fill).clamp(0.0, 1.0)
        return TF.normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"LibraryImageTransform(image_size={list(self.image_size)}, resize_size={list(self.resize_size)}, "
                f"resize_mode={self.resize_mode!r}, interpolation={self.interpolation!r})")


def library_image_transform(contract: dict) -> LibraryImageTransform:
    return LibraryImageTransform(
        image_size=contract.get("image_size", 224), resize_size=contract.get("resize_size"),
        resize_mode=contract.get("resize_mode", "shortest"), mean=contract.get("mean", (0.5, 0.5, 0.5)),
        std=contract.get("std", (0.5, 0.5, 0.5)), interpolation=contract.get("interpolation", "bicubic"),
        fill=contract.get("fill", 0),
    )


_TOKENIZERS: dict[str, Any] = {}  # one per process and configuration


def open_clip_tokenizer(model_name: str, context_length: int, tokenizer_kwargs: dict | None = None):
    """open_clip's own tokenizer for ``model_name`` (cached). Only tokenizers that ship with open_clip are used."""
    key = json.dumps([model_name, int(context_length), tokenizer_kwargs or {}], sort_keys=True)
    if key not in _TOKENIZERS:
        import open_clip

        tok = open_clip.get_tokenizer(model_name, context_length=int(context_length), **(tokenizer_kwargs or {}))
        if type(tok).__name__ != "SimpleTokenizer":
            raise ValueError(f"open_clip model {model_name!r} tokenizes with {type(tok).__name__}, whose files are "
                             "not shipped with open_clip; anybind does not download tokenizers")
        _TOKENIZERS[key] = tok
    return _TOKENIZERS[key]


class OpenClipTokenizerTransform:
    """``str`` -> int64 ``(context_length,)`` with open_clip's tokenizer for ``model_name``; an int tensor of
    ``context_length`` ids is accepted as already tokenized."""

    def __init__(self, model_name: str, context_length: int = 77, tokenizer_kwargs: dict | None = None):
        self.model_name = model_name
        self.context_length = int(context_length)
        self.tokenizer_kwargs = dict(tokenizer_kwargs or {})

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        raw = text_or_ids(raw, source, self.context_length)
        if isinstance(raw, torch.Tensor):
            return raw
        return open_clip_tokenizer(self.model_name, self.context_length, self.tokenizer_kwargs)([raw])[0].long()

    def __repr__(self) -> str:
        return f"OpenClipTokenizerTransform(model_name={self.model_name!r}, context_length={self.context_length})"


def open_clip_text_transform(contract: dict) -> OpenClipTokenizerTransform:
    """Contract keys: ``model_name`` (the open_clip configuration whose tokenizer is used), ``context_length``,
    ``tokenizer_kwargs`` (all required); ``tokenizer`` (optional) names the tokenizer family, ``open_clip``."""
    name = "open_clip text_transform"
    c = read_contract(contract, name, ("model_name", "context_length", "tokenizer_kwargs"), {"tokenizer": "open_clip"})
    if not isinstance(c["tokenizer_kwargs"], dict):
        raise ContractError(f"{name}: contract key 'tokenizer_kwargs' must be a mapping, got {c['tokenizer_kwargs']!r}")
    return OpenClipTokenizerTransform(c["model_name"], positive_int(c["context_length"], "context_length", name),
                                      c["tokenizer_kwargs"])
