"""Readers: decode one file into raw data. The only code in anybind that knows file formats.

Every reader takes a path and returns the raw object its modality's transform expects (see
``anybind/data/transforms.py`` and ``docs/formats.md``):

* :func:`read_image` -> PIL RGB image (first frame; grayscale, palette, alpha and 16-bit turned into 8-bit RGB)
* :func:`read_text` -> ``str``
* :func:`read_audio` -> ``(waveform float32 (channels, samples), sample_rate)``
* :func:`read_video` -> a lazy :class:`VideoSource`; frames are decoded only when asked for
* :func:`read_points` -> float32 ``(N, 3)`` or ``(N, 6)`` xyz(+rgb in [0, 1]); meshes are surface-sampled
* :func:`read_tensor_file` -> a tensor from ``.pt`` / ``.npy`` / ``.npz``

Anything wrong with a file raises :class:`anybind.errors.InputError` naming the file, the modality and the problem.
Heavy decoders (soundfile, librosa, decord) are imported on first use so that ``import anybind`` stays light.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from .pointfiles import read_points

__all__ = [
    "VideoSource", "read_audio", "read_image", "read_points", "read_tensor_file", "read_text", "read_video",
]


def check_file(path: str | Path, modality: str) -> Path:
    """``path`` as a Path, after checking that it is an existing, non-empty regular file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, modality, "file does not exist")
    if not path.is_file():
        raise InputError(path, modality, "is not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, modality, "file is empty (0 bytes)")
    return path


# ----------------------------------------------------------------------------------------------------- image

_WHITE = (255, 255, 255)


def _to_8bit(img):
    """Integer (``I``, ``I;16*``) and float (``F``) images -> 8-bit ``L``."""
    from PIL import Image

    a = np.asarray(img)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:  # float images in [0, 1]
            a = a * 255.0
        elif hi > lo:  # anything else: stretch the observed range
            a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = a.astype(np.int64)
        if img.mode.startswith("I;16") or a.max() > 255:  # 16-bit samples
            a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img):
    """Any PIL image -> 8-bit RGB. Transparent pixels are composited over white."""
    from PIL import Image

    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: str | Path):
    """Decode PNG, JPEG, WebP, BMP, TIFF or GIF (first frame) into an 8-bit RGB PIL image.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted to RGB and
    transparency is composited over white.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_file(path, "image")
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of animations
            img.load()  # decode now, so a truncated file fails here, not later in a worker
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
    except UnidentifiedImageError:
        raise InputError(path, "image", "not a recognised image format (expected PNG, JPEG, WebP, BMP, TIFF or "
                                        "GIF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, "image", f"truncated or corrupt image ({exc})") from exc
    if rgb.width == 0 or rgb.height == 0:
        raise InputError(path, "image", f"image has no pixels ({rgb.width}x{rgb.height})")
    return rgb


# ------------------------------------------------------------------------------------------------------ text


def read_text(path: str | Path) -> str:
    """UTF-8 text (a byte-order mark is dropped), stripped of leading and trailing whitespace."""
    path = check_file(path, "text")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, "text", f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    text = text.strip()
    if not text:
        raise InputError(path, "text", "file holds only whitespace; expected some text")
    return text


# ----------------------------------------------------------------------------------------------------- audio


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode WAV, FLAC, OGG or MP3 -> ``(float32 (channels, samples), sample_rate)``.

    soundfile (libsndfile) decodes every listed format; librosa is the fallback for anything else it can read.
    Integer PCM becomes floats in [-1, 1) (int16 / 32768). Zero-length audio and NaN/inf samples raise.
    """
    import soundfile as sf

    path = check_file(path, "audio")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
        wave = torch.from_numpy(np.ascontiguousarray(data.T))
    except sf.LibsndfileError as sf_exc:
        wave, sr = _read_audio_librosa(path, sf_exc)
    if wave.shape[-1] == 0:
        raise InputError(path, "audio", "zero-length audio: no samples decoded (empty or truncated stream)")
    _check_wav_complete(path)
    if not torch.isfinite(wave).all():
        raise InputError(path, "audio", "samples contain NaN or inf")
    if sr <= 0:
        raise InputError(path, "audio", f"invalid sample rate {sr}")
    return wave, int(sr)


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently reads what is there of a cut-off WAV; compare with the size its header declares."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                available = path.stat().st_size - f.tell()
                if 0 < size < 0xFFFFFFFF and available < size:  # 0 / 0xFFFFFFFF: streamed, size unknown
                    raise InputError(path, "audio", f"truncated WAV: header declares {size} bytes of samples, "
                                                    f"the file holds {available}")
                return
            f.seek(size + (size & 1), 1)


def _read_audio_librosa(path: Path, sf_exc: Exception) -> tuple[torch.Tensor, int]:
    import warnings

    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before falling back to audioread
            data, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one typed error
        problem = "not a recognised or decodable audio file (expected WAV, FLAC, OGG or MP3)"
        raise InputError(path, "audio", f"{problem}; soundfile: {sf_exc}; librosa: {type(exc).__name__}") from exc
    data = np.atleast_2d(data)
    return torch.from_numpy(np.ascontiguousarray(data)), int(sr)


# ----------------------------------------------------------------------------------------------------- video


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
        try:
            frames = reader.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:  # noqa: BLE001 - decord raises its own error types
            raise InputError(self.path, "video", f"frames {unique.tolist()} could not be decoded "
                                                 f"(truncated or corrupt file?): {exc}") from exc
        self.frames_decoded += len(unique)
        self.batches_decoded += 1
        return torch.from_numpy(frames)[inverse]

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"VideoSource({str(self.path)!r}, frames={self.num_frames}, fps={self.fps:g})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"] = None
        return state


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


# --------------------------------------------------------------------------------------------------- tensors


def read_tensor_file(path: str | Path, modality: str = "tensor") -> torch.Tensor:
    """A preprocessed tensor: ``.pt``/``.pth`` (``torch.load(weights_only=True)``; a tensor, or a dict/list holding
    exactly one), ``.npy`` or ``.npz`` (first array). Used by the ImageBind-compatible depth/thermal/imu modalities."""
    path = check_file(path, modality)
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = list(obj.values())
            if isinstance(obj, (list, tuple)):
                tensors = [o for o in obj if isinstance(o, torch.Tensor)]
                if len(tensors) != 1:
                    raise InputError(path, modality, f"expected one tensor in the file, found {len(tensors)}")
                obj = tensors[0]
            if not isinstance(obj, torch.Tensor):
                raise InputError(path, modality, f"expected a tensor, found {type(obj).__name__}")
            return obj
        if suffix in (".npy", ".npz"):
            arr = np.load(path, allow_pickle=False)
            if isinstance(arr, np.lib.npyio.NpzFile):
                with arr:
                    if not arr.files:
                        raise InputError(path, modality, ".npz archive holds no arrays")
                    arr = arr[arr.files[0]]
            return torch.from_numpy(np.ascontiguousarray(arr))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, modality, f"could not be loaded as a tensor ({type(exc).__name__}: {exc})") from exc
    raise InputError(path, modality, f"unsupported tensor file extension {suffix!r} (expected .pt, .pth, .npy, "
                                     f".npz)")
