"""Transforms: raw data -> one sample tensor, parameterized by an encoder's input contract.

Transforms never open files: a reader (:mod:`anybind.data.readers`) decodes the file, or hands over a lazy source
(an audio file read window by window, a video decoded frame by frame) that the transform asks for only what it keeps.
Each factory takes the contract dict and returns a small picklable callable (DataLoader workers receive a copy):

* :func:`image_transform` -> :class:`ImageTransform`: PIL / uint8 / float image -> float32 ``(3, S, S)``
* :func:`text_transform` -> :class:`ClipTokenizerTransform`: ``str`` -> int64 ``(context_length,)``
* :func:`audio_transform` -> :class:`LogMelTransform`: waveform or :class:`SampleSource` ->
  float32 ``(clips, 1, mel_bins, frames)``
* :func:`video_transform` -> :class:`VideoFrameTransform`: :class:`FrameSource` or frames ->
  float32 ``(clips, 3, frames, S, S)``
* :func:`points_transform` -> :class:`PointCloudTransform`: ``(N, 3|6)`` -> float32 ``(num_points, channels)``
* :func:`identity_transform` -> :class:`IdentityTransform`: preprocessed tensors (depth, thermal, imu)

Factories read their contract strictly: a missing required key, a key the transform does not know (``compat``
aside) or a value of the wrong kind raises :class:`anybind.errors.ContractError` naming the keys expected. With
``clips`` 0 or None, audio and video samples carry no clip dimension. Every callable takes ``(raw, source=None)``;
``source`` only names the input in error messages. Bad input raises :class:`anybind.errors.InputError`. The
accepted formats and contract keys are listed in ``docs/formats.md``.
"""

from __future__ import annotations

from ...constants import CLIP_MEAN, CLIP_STD
from ._common import read_contract
from .audio import LogMelTransform, SampleSource, audio_transform, clip_windows, resampled_windows
from .image import ImageTransform, check_frames_tensor, image_transform
from .points import PointCloudTransform, points_transform
from .tensor import IdentityTransform, identity_transform
from .text import ClipTokenizerTransform, cut_text, get_tokenizer, text_transform
from .video import FrameSource, VideoFrameTransform, frame_indices, video_transform

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "ClipTokenizerTransform", "FrameSource", "IdentityTransform", "ImageTransform",
    "LogMelTransform", "PointCloudTransform", "SampleSource", "VideoFrameTransform", "audio_transform",
    "check_frames_tensor", "clip_windows", "cut_text", "frame_indices", "get_tokenizer", "identity_transform",
    "image_transform", "points_transform", "read_contract", "resampled_windows", "text_transform", "video_transform",
]
