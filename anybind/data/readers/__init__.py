"""Readers: decode one file into raw data. The only code in anybind that knows file formats.

Every reader takes a path and returns the raw object its modality's transform expects (see
``anybind/data/transforms`` and ``docs/formats.md``):

* :func:`read_image` -> PIL RGB image (first frame; grayscale, palette, alpha and 16-bit turned into 8-bit RGB)
* :func:`read_text` -> ``str``
* :func:`open_audio` -> a lazy :class:`AudioSource`; :func:`read_audio` -> ``(waveform float32 (channels, samples),
  sample_rate)``
* :func:`read_video` -> a lazy :class:`VideoSource`; frames are decoded only when asked for
* :func:`read_points` -> float32 ``(N, 3)`` or ``(N, 6)`` xyz(+rgb in [0, 1]); meshes are surface-sampled
* :func:`read_tensor_file` -> a tensor from ``.pt`` / ``.npy`` / ``.npz``

:mod:`anybind.data.readers.imagebind` decodes files the way ImageBind's own loading does, for its preprocessing.

Anything wrong with a file raises :class:`anybind.errors.InputError` naming the file, the modality and the problem;
so does a file past one of the per-item limits of :mod:`anybind.data.limits` (``docs/input-limits.md``).
Heavy decoders (soundfile, librosa, decord) are imported on first use so that ``import anybind`` stays light.
"""

from __future__ import annotations

from ..files import check_file
from ..pixels import to_rgb
from ..pointfiles import read_points
from .audio import AudioSource, open_audio, read_audio
from .image import read_image
from .tensors import read_tensor_file
from .text import read_text
from .video import VideoSource, read_video

__all__ = [
    "AudioSource", "VideoSource", "check_file", "open_audio", "read_audio", "read_image", "read_points",
    "read_tensor_file", "read_text", "read_video", "to_rgb",
]
