"""Files decoded the way ImageBind's own data loading decodes them, for its preprocessing in
:mod:`anybind.compat.preprocess`.

``read_image_file`` is PIL ``convert("RGB")``; ``read_audio_file`` decodes with soundfile (int16 files become
int16 / 32768 floats); ``read_text_file`` reads UTF-8. Videos open as anybind's lazy
:class:`~anybind.data.readers.VideoSource` (only the kept frames are decoded, within the limits of
``docs/input-limits.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .video import read_video

__all__ = ["IMAGEBIND_READERS", "read_audio_file", "read_image_file", "read_text_file"]


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


IMAGEBIND_READERS = {"text": read_text_file, "image": read_image_file, "vision": read_image_file,
                     "audio": read_audio_file, "video": read_video}
