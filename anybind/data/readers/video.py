"""Video files -> a lazy :class:`VideoSource` (decord); frames are decoded only when a transform asks for them.

Opening a video reads its index only. :meth:`VideoSource.get_frames` decodes the requested frames in one batch,
after checking the frame size (``LIMITS.max_video_frame_pixels``) and how many frames the decoder must run
through to reach them from the nearest keyframes (``LIMITS.max_video_decode_frames``): a file with one keyframe
in a million frames is refused rather than decoded for a minute.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...errors import InputError
from ..files import check_file
from ..limits import LIMITS, limit_hint

__all__ = ["VideoSource", "read_video"]


_OPEN_DECODERS: "weakref.WeakSet" = weakref.WeakSet()


def _disown_decoders_after_fork() -> None:
    """In a forked child (a DataLoader worker), forget the decord decoders inherited from the parent.

    A decord reader owns decoding threads; a fork copies the reader but not its threads, and freeing that copy waits
    on them forever. A reader the parent had not yet freed (say, one held by an exception's traceback until the next
    garbage collection) would hang the worker at its first collection, so the child drops the handles unfreed: the
    memory belongs to the parent's copy anyway.
    """
    for reader in list(_OPEN_DECODERS):
        reader._handle = None
    _OPEN_DECODERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_decoders_after_fork)


class VideoSource:
    """A video file opened with decord; no frame is decoded until :meth:`get_frames` asks for it.

    ``num_frames`` and ``fps`` come from the container index. ``frames_decoded`` counts the frames returned so far
    (each ``get_frames`` call is one batched decord ``get_batch``), which makes "decode only what you keep"
    checkable. :meth:`close` frees the decoder now (it reopens on the next :meth:`get_frames`); a context manager
    closes on exit. Picklable: the decoder is reopened after unpickling.
    """

    def __init__(self, path: str | Path, *, num_threads: int = 1):
        self.path = Path(path)
        self.num_threads = num_threads
        self.frames_decoded = 0
        self.batches_decoded = 0
        self._reader = None
        self._keys: np.ndarray | None = None
        _check_frame_size(self.path)
        reader = self._open()
        self.num_frames = len(reader)
        fps = float(reader.get_avg_fps() or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 25.0
        if self.num_frames <= 0:
            self.close()
            raise InputError(self.path, "video", "video has no frames")

    def _open(self):
        if self._reader is None:
            try:  # PyAV's FFmpeg must load before decord's: the other order breaks PyAV's VP8 encoder in-process
                import av  # noqa: F401
            except ImportError:
                pass
            import decord

            try:
                self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=self.num_threads)
            except Exception as exc:  # noqa: BLE001 - decord raises DECORDError or RuntimeError
                raise InputError(self.path, "video", _diagnose_video(self.path, exc)) from None
            _OPEN_DECODERS.add(self._reader)
        return self._reader

    def close(self) -> None:
        """Free the decoder and its threads now instead of at garbage collection."""
        reader, self._reader = self._reader, None
        if reader is not None:  # the last reference: decord frees the decoder when it goes
            _OPEN_DECODERS.discard(reader)

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def get_frames(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` frames at ``indices`` (one batched decode; duplicates decoded once)."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise InputError(self.path, "video", "asked for zero frames")
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_frames:
            raise InputError(self.path, "video", f"frame index out of range 0..{self.num_frames - 1}: "
                                                 f"{idx.min().item()}..{idx.max().item()}")
        unique, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        reader = self._open()
        cost = self.decode_cost(unique.tolist())
        if cost > LIMITS.max_video_decode_frames:
            raise InputError(self.path, "video", f"reaching the {len(unique)} kept frames means decoding about {cost} "
                                                 f"frames from their keyframes (keyframes at {self._key_summary()}), "
                                                 f"over the {limit_hint('max_video_decode_frames')}")
        try:
            frames = reader.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:  # noqa: BLE001 - decord raises its own error types
            raise InputError(self.path, "video", f"frames {unique.tolist()} could not be decoded "
                                                 f"(truncated or corrupt file?): {exc}") from exc
        self.frames_decoded += len(unique)
        self.batches_decoded += 1
        return torch.from_numpy(frames)[inverse]

    def keyframes(self) -> np.ndarray:
        """Sorted keyframe indices from the container index (no decoding)."""
        if self._keys is None:
            keys = np.asarray(self._open().get_key_indices(), dtype=np.int64)
            self._keys = np.unique(np.concatenate([[0], keys]))  # decoding always can start at the first frame
        return self._keys

    def decode_cost(self, indices: Sequence[int]) -> int:
        """About how many frames a decoder runs through to return ``indices`` (sorted, unique): from the keyframe
        before each one, or on from the previous one when that is closer."""
        keys, pos, cost = self.keyframes(), -1, 0
        for t in indices:
            k = int(keys[np.searchsorted(keys, t, side="right") - 1])
            start = pos + 1 if k <= pos < t else k
            cost += t - start + 1
            pos = t
        return cost

    def _key_summary(self) -> str:
        keys = self.keyframes()
        shown = ", ".join(str(k) for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
        return f"{shown}: {len(keys)} in {self.num_frames} frames"

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"VideoSource({str(self.path)!r}, frames={self.num_frames}, fps={self.fps:g})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"] = None
        return state


def _check_frame_size(path: Path) -> None:
    """Refuse frames larger than ``LIMITS.max_video_frame_pixels`` before a decoder is built (PyAV reads the
    stream header only)."""
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.video
            if not streams:
                return  # decord's open then fails with the diagnosis
            width, height = int(streams[0].codec_context.width or 0), int(streams[0].codec_context.height or 0)
    except Exception:  # noqa: BLE001 - an unreadable header is diagnosed when decord opens the file
        return
    if width * height > LIMITS.max_video_frame_pixels:
        raise InputError(path, "video", f"frames are {width}x{height} = {width * height} pixels, over the "
                                        f"{limit_hint('max_video_frame_pixels')}")


def _diagnose_video(path: Path, exc: Exception) -> str:
    """Why decord could not open ``path``, in words (PyAV looks at the container to tell the cases apart)."""
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.video
            if not streams:
                return "file has no video stream (no frames)"
            if not any(True for _ in container.decode(video=0)):
                return "video stream has no frames"
    except Exception as probe_exc:  # noqa: BLE001
        detail = f"{detail}; {type(probe_exc).__name__}: {probe_exc}"
    return f"not a decodable video, truncated or corrupt (expected MP4, WebM, AVI, MKV or MOV): {detail[-300:]}"


def read_video(path: str | Path) -> VideoSource:
    """Open MP4, WebM, AVI, MKV or MOV lazily; raises when the file has no decodable frames."""
    return VideoSource(check_file(path, "video"))
