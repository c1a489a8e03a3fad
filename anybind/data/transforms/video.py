"""Video transform: a lazy video file or frames -> normalized float32 ``(clips, 3, frames, S, S)``."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ...constants import CLIP_MEAN, CLIP_STD
from ...errors import ContractError, InputError
from ._common import as_tensor, describe, positive_float, positive_int, read_contract, triple
from .image import Frames, interpolation_name, check_frames_tensor

__all__ = ["FrameSource", "VideoFrameTransform", "frame_indices", "video_transform"]


@runtime_checkable
class FrameSource(Protocol):
    """A lazily decoded video (:class:`anybind.data.readers.VideoSource` is one): ``num_frames`` and ``fps`` from
    the container, ``get_frames(indices)`` -> uint8 ``(T, H, W, 3)``; an optional ``close()`` frees the decoder."""

    num_frames: int
    fps: float

    def get_frames(self, indices: Any) -> torch.Tensor: ...


def frame_indices(num_frames: int, clip_frames: int, clips: int, frames: int) -> torch.Tensor:
    """``(clips, frames)`` frame indices: clip starts evenly spaced over the video, each clip ``clip_frames``
    long, ``frames`` picks spread uniformly over each clip (first and last frame included)."""
    span = max(1, min(num_frames, clip_frames))
    starts = torch.linspace(0, num_frames - span, clips).round().long()
    inner = torch.linspace(0, span - 1, frames).floor().long()
    return starts[:, None] + inner


class VideoFrameTransform(Frames):
    """:class:`VideoSource`, frames ``(T, 3, H, W)`` (uint8 or float in [0, 1]) or ``(frames, fps)`` ->
    float32 ``(clips, 3, frames, S, S)``.

    ``clips`` clips of ``clip_duration`` seconds are spread evenly over the video and ``frames`` frames picked
    uniformly inside each; only those frames are decoded (one batched call), then resized, cropped and
    normalized together. In-memory frames without an fps are split into ``clips`` equal spans.
    """

    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, frames: int = 2, clips: int | None = 5,
                 clip_duration: float = 2.0, interpolation: str = "bilinear"):
        super().__init__(image_size, mean, std, interpolation)
        self.frames = int(frames)
        self.clips = int(clips) if clips else None
        self.clip_duration = float(clip_duration)

    def indices(self, num_frames: int, fps: float | None) -> torch.Tensor:
        clips = self.clips or 1
        clip_frames = round(self.clip_duration * fps) if fps else max(1, num_frames // clips)
        return frame_indices(num_frames, clip_frames, clips, self.frames)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        fps = None
        if isinstance(raw, (tuple, list)) and len(raw) == 2 and isinstance(raw[1], (int, float)):
            raw, fps = raw[0], float(raw[1])
        raw = as_tensor(raw)
        if isinstance(raw, FrameSource):
            idx = self.indices(raw.num_frames, raw.fps)
            unique, inverse = torch.unique(idx.flatten(), sorted=True, return_inverse=True)
            try:
                frames = raw.get_frames(unique).permute(0, 3, 1, 2)  # (U, 3, H, W) uint8: only the kept frames
            finally:
                close = getattr(raw, "close", None)
                if close is not None:
                    close()  # the decoder's threads go now, not whenever the source is collected
        elif isinstance(raw, torch.Tensor):
            if raw.ndim != 4:
                raise InputError(source, "video", f"expected frames (T, 3, H, W), got {describe(raw)}")
            if raw.shape[0] == 0:
                raise InputError(source, "video", "video has no frames")
            x = check_frames_tensor(raw, "video", source, "frames (T, 3, H, W)")
            idx = self.indices(x.shape[0], fps)
            unique, inverse = torch.unique(idx.flatten(), sorted=True, return_inverse=True)
            frames = x[unique]
        else:
            raise InputError(source, "video", f"expected a video file, a VideoSource or frames (T, 3, H, W), got "
                                              f"{describe(raw)}")
        out = self.tensor(frames)[inverse]  # (clips * frames, 3, S, S)
        out = out.view(self.clips or 1, self.frames, 3, self.image_size, self.image_size).transpose(1, 2)
        out = out.contiguous()
        return out if self.clips else out[0]

    def __repr__(self) -> str:
        return (f"VideoFrameTransform(image_size={self.image_size}, frames={self.frames}, clips={self.clips}, "
                f"clip_duration={self.clip_duration})")




def video_transform(contract: dict) -> VideoFrameTransform:
    """Contract keys: ``image_size``, ``mean``, ``std``, ``frames``, ``clips`` (0 or None: no clip dimension),
    ``clip_duration`` (required); ``interpolation`` (optional, default ``bilinear``)."""
    name = "video_transform"
    c = read_contract(contract, name, ("image_size", "mean", "std", "frames", "clips", "clip_duration"),
                      {"interpolation": "bilinear"})
    clips = c["clips"]
    if clips not in (None, 0):
        clips = positive_int(clips, "clips", name)
    return VideoFrameTransform(
        image_size=positive_int(c["image_size"], "image_size", name), mean=triple(c["mean"], "mean", name),
        std=triple(c["std"], "std", name), frames=positive_int(c["frames"], "frames", name), clips=clips,
        clip_duration=positive_float(c["clip_duration"], "clip_duration", name),
        interpolation=interpolation_name(c["interpolation"], name),
    )
