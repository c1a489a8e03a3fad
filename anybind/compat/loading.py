"""ImageBind-preprocessed batches from paths: :func:`load_and_transform` decodes each file ImageBind's way
(:mod:`anybind.data.readers.imagebind`) and runs it through :mod:`anybind.compat.preprocess`, whose transforms take
decoded data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.readers.imagebind import IMAGEBIND_READERS, read_audio_file, read_image_file, read_text_file
from . import preprocess as P

__all__ = ["load_and_transform", "read_audio_file", "read_image_file", "read_text_file"]


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
            return IMAGEBIND_READERS[modality](item)
        return item

    return torch.stack([fn(decode(i)) for i in items])
