"""ImageBind's way of decoding files, for :mod:`anybind.compat.preprocess` (whose transforms take decoded data only).

``read_image_file`` is PIL ``convert("RGB")``; ``read_audio_file`` decodes with soundfile (int16 files become
int16 / 32768 floats); videos open as anybind's lazy :class:`~anybind.data.readers.VideoSource` (only the kept
frames are decoded, within the limits of ``docs/input-limits.md``). :func:`load_and_transform` runs a batch of paths
or raw items through the ImageBind preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import preprocess as P

__all__ = ["load_and_transform", "read_audio_file", "read_image_file", "read_text_file"]


def read_text_file(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def read_image_file(path: str | Path):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def read_audio_file(path: str | Path) -> tuple[torch.Tensor, int]:
    """(float32 (channels, T) with int16 files as int16/32768, sample rate), decoded with soundfile."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def _read_video_file(path: str | Path):
    from ..data.readers import read_video

    return read_video(path)


_READERS = {"text": read_text_file, "image": read_image_file, "vision": read_image_file, "audio": read_audio_file,
            "video": _read_video_file}


def load_and_transform(modality: str, items: Sequence[Any], contract: dict | None = None) -> torch.Tensor:
    """Batch helper: ImageBind-preprocess ``items`` (paths or raw data; for text, strings are the captions) of one
    modality with default contracts."""
    factories = {"text": P.text_transform, "image": P.image_transform, "vision": P.image_transform,
                 "audio": P.audio_transform, "video": P.video_transform}
    if modality not in factories:
        raise ValueError(f"no ImageBind preprocessing for modality {modality!r}; known: {sorted(factories)}")
    fn = factories[modality](dict(contract or {}))

    def decode(item: Any) -> Any:
        if isinstance(item, Path) or (isinstance(item, str) and modality != "text"):
            return _READERS[modality](item)
        return item

    return torch.stack([fn(decode(i)) for i in items])
