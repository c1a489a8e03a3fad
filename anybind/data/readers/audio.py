"""Audio files -> waveforms. :func:`open_audio` is lazy: only the spans a transform asks for are decoded.

soundfile (libsndfile) decodes WAV, FLAC, OGG and MP3; the audio track of a container (MP4, WebM, MKV, MOV, AVI,
M4A, ...) is decoded with PyAV; librosa is the fallback for anything else it can read.
Uncompressed and FLAC files are read by seeking, so three 2-second clips of a 10-hour file cost three small
reads. Formats that cannot seek sample-exactly are decoded whole, up to ``LIMITS.max_audio_decode_samples``.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ..files import check_file
from ..limits import LIMITS, limit_hint

__all__ = ["AudioSource", "open_audio", "read_audio", "read_audio_track"]

# libsndfile major formats whose seek lands on the exact sample a whole decode gives
_SEEKABLE = {"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC", "RAW"}


class AudioSource:
    """An audio file opened by its header; samples are decoded only by :meth:`read` (or :meth:`read_all`).

    ``num_samples`` (per channel), ``channels`` and ``sample_rate`` come from the header. ``samples_read`` counts
    the samples (per channel) decoded so far, which makes "read only what the contract keeps" checkable.
    Picklable (it holds no open handle).
    """

    def __init__(self, path: str | Path):
        import soundfile as sf

        self.path = check_file(path, "audio")
        self.samples_read = 0
        self.decode_seconds = 0.0  # time spent decoding samples (read / read_all), for profiling
        self._whole: torch.Tensor | None = None
        try:
            info = sf.info(str(self.path))
        except sf.LibsndfileError as exc:
            t0 = time.perf_counter()
            self._whole, sr = _read_audio_fallback(self.path, exc)
            self.decode_seconds += time.perf_counter() - t0
            self.num_samples, self.channels, self.sample_rate, self.seekable = self._whole.shape[-1], \
                self._whole.shape[0], int(sr), False
        else:
            self.num_samples, self.channels, self.sample_rate = int(info.frames), int(info.channels), \
                int(info.samplerate)
            self.seekable = info.format in _SEEKABLE
        if self.num_samples <= 0:
            raise InputError(self.path, "audio", "zero-length audio: no samples decoded (empty or truncated stream)")
        if self.sample_rate <= 0:
            raise InputError(self.path, "audio", f"invalid sample rate {self.sample_rate}")
        _check_wav_complete(self.path)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def read(self, start: int, stop: int) -> torch.Tensor:
        """float32 ``(channels, stop - start)`` samples of ``[start, stop)`` (clamped to the file)."""
        start, stop = max(0, int(start)), min(self.num_samples, int(stop))
        if stop <= start:
            return torch.zeros(self.channels, 0)
        if not self.seekable:
            return self.read_all()[0][:, start:stop]
        import soundfile as sf

        t0 = time.perf_counter()
        try:
            data, _ = sf.read(str(self.path), start=start, stop=stop, dtype="float32", always_2d=True)
        except sf.LibsndfileError as exc:
            raise InputError(self.path, "audio", f"samples {start}..{stop} could not be decoded ({exc})") from exc
        wave = torch.from_numpy(np.ascontiguousarray(data.T))
        self.samples_read += wave.shape[-1]
        self.decode_seconds += time.perf_counter() - t0
        return _check_finite(self.path, wave)

    def read_all(self) -> tuple[torch.Tensor, int]:
        """The whole file -> ``(float32 (channels, samples), sample_rate)``; refused past the decode limit."""
        if self._whole is None:
            total = self.num_samples * self.channels
            if total > LIMITS.max_audio_decode_samples:
                raise InputError(self.path, "audio", f"{self.duration:.0f} s x {self.channels} channel(s) = {total} "
                                                     f"samples to decode whole, over the "
                                                     f"{limit_hint('max_audio_decode_samples')}")
            import soundfile as sf

            t0 = time.perf_counter()
            try:
                data, _ = sf.read(str(self.path), dtype="float32", always_2d=True)  # (samples, channels)
                self._whole = torch.from_numpy(np.ascontiguousarray(data.T))
            except sf.LibsndfileError as exc:
                self._whole, _ = _read_audio_fallback(self.path, exc)
            self.decode_seconds += time.perf_counter() - t0
            if self._whole.shape[-1] == 0:
                raise InputError(self.path, "audio", "zero-length audio: no samples decoded (empty or truncated "
                                                     "stream)")
            self.samples_read += self._whole.shape[-1]
        return _check_finite(self.path, self._whole), self.sample_rate

    def __iter__(self):
        """Unpacks as ``(waveform, sample_rate)``, like :func:`read_audio` (decoding the whole file)."""
        return iter(self.read_all())

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.seekable:
            state["_whole"] = None
        return state

    def __repr__(self) -> str:
        return (f"AudioSource({str(self.path)!r}, samples={self.num_samples}, channels={self.channels}, "
                f"sample_rate={self.sample_rate})")


def _check_finite(path: Path, wave: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(wave).all():
        raise InputError(path, "audio", "samples contain NaN or inf")
    return wave


def open_audio(path: str | Path) -> AudioSource:
    """Open WAV, FLAC, OGG or MP3 lazily (the registered reader of ``audio``); see :class:`AudioSource`."""
    return AudioSource(path)


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode WAV, FLAC, OGG or MP3 whole -> ``(float32 (channels, samples), sample_rate)``.

    Integer PCM becomes floats in [-1, 1) (int16 / 32768). Zero-length audio, NaN/inf samples and files past
    ``LIMITS.max_audio_decode_samples`` raise. Transforms prefer :func:`open_audio`, which reads only their clips.
    """
    return AudioSource(path).read_all()


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently reads what is there of a cut-off WAV; compare with the size its header declares."""
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


# containers that hold an audio track beside (or instead of) video: decoded with PyAV (FFmpeg)
CONTAINER_SUFFIXES = (".mp4", ".m4a", ".mov", ".webm", ".mkv", ".mka", ".avi", ".aac", ".opus")


def _read_audio_fallback(path: Path, sf_exc: Exception) -> tuple[torch.Tensor, int]:
    """What libsndfile cannot read: the audio track of a video or audio container through PyAV, else librosa."""
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        return read_audio_track(path)
    try:
        return _read_audio_librosa(path, sf_exc)
    except InputError as librosa_error:
        try:  # an unusual extension FFmpeg still knows
            return read_audio_track(path)
        except InputError:
            raise librosa_error from None


def read_audio_track(path: str | Path) -> tuple[torch.Tensor, int]:
    """The first audio stream of a container (MP4, WebM, MKV, MOV, AVI, M4A, ...) decoded with PyAV ->
    ``(float32 (channels, samples), sample_rate)``, at the stream's own rate; refused past
    ``LIMITS.max_audio_decode_samples`` (checked against the declared duration first, then while decoding)."""
    import av

    path = Path(path)
    limit = LIMITS.max_audio_decode_samples
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
                raise InputError(path, "audio", f"file has no audio track (it holds {kinds})")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            channels = int(stream.codec_context.channels or 1)
            seconds = container.duration / 1e6 if container.duration else None
            if seconds is not None and rate and seconds * rate * channels > limit:
                raise InputError(path, "audio", f"audio track of {seconds:.0f} s x {channels} channel(s) at {rate} Hz "
                                                f"to decode whole, over the {limit_hint('max_audio_decode_samples')}")
            resampler = av.AudioResampler(format="fltp")  # planar float32; the stream's own layout and rate
            chunks, total = [], 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()
                    chunks.append(arr)
                    total += arr.size
                    rate = int(out.sample_rate or rate)
                if total > limit:
                    raise InputError(path, "audio", f"over {total} samples decoded, over the "
                                                    f"{limit_hint('max_audio_decode_samples')}")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg's errors become one typed error
        raise InputError(path, "audio", f"the audio track could not be decoded ({type(exc).__name__}: {exc})") from exc
    if not chunks or sum(c.shape[-1] for c in chunks) == 0:
        raise InputError(path, "audio", "zero-length audio: the audio track holds no samples")
    wave = np.concatenate([np.atleast_2d(c) for c in chunks], axis=1).astype(np.float32, copy=False)
    if rate <= 0:
        raise InputError(path, "audio", f"invalid sample rate {rate}")
    return torch.from_numpy(np.ascontiguousarray(wave)), rate


def _read_audio_librosa(path: Path, sf_exc: Exception) -> tuple[torch.Tensor, int]:
    import warnings

    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before falling back to audioread
            seconds = LIMITS.max_audio_decode_samples / 8000  # a bound before decoding; checked exactly below
            data, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32, duration=seconds)
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one typed error
        problem = "not a recognised or decodable audio file (expected WAV, FLAC, OGG or MP3)"
        raise InputError(path, "audio", f"{problem}; soundfile: {sf_exc}; librosa: {type(exc).__name__}") from exc
    data = np.atleast_2d(data)
    if data.size > LIMITS.max_audio_decode_samples:
        raise InputError(path, "audio", f"over {data.size} samples to decode whole, over the "
                                        f"{limit_hint('max_audio_decode_samples')}")
    return torch.from_numpy(np.ascontiguousarray(data)), int(sr)
