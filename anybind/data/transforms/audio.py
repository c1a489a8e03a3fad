"""Audio transform: waveform or lazy audio file -> normalized kaldi log-mel clips."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ...constants import AUDIO_MEAN, AUDIO_STD
from ...errors import ContractError, InputError
from .fbank import kaldi_fbank, resample
from ._common import as_tensor, describe, positive_float, positive_int, read_contract

__all__ = ["LogMelTransform", "SampleSource", "audio_transform", "clip_windows", "resampled_windows"]


@runtime_checkable
class SampleSource(Protocol):
    """A lazily read audio file (:class:`anybind.data.readers.AudioSource` is one): its length and rate from the
    header; ``read(start, stop)`` decodes float32 ``(channels, stop - start)``; ``read_all()`` the whole file."""

    num_samples: int
    sample_rate: int
    seekable: bool

    def read(self, start: int, stop: int) -> torch.Tensor: ...

    def read_all(self) -> tuple[torch.Tensor, int]: ...


_SOURCE_TYPES: dict[type, bool] = {}


def is_source(raw: Any) -> bool:
    """Whether ``raw`` is a :class:`SampleSource`, decided once per type: ``isinstance`` against a Protocol costs
    tens of microseconds a call, and a file's transform asks several times."""
    kind = type(raw)
    known = _SOURCE_TYPES.get(kind)
    if known is None:
        known = _SOURCE_TYPES[kind] = isinstance(raw, SampleSource)
    return known


def _gather(wave: "torch.Tensor | SampleSource", idx: torch.Tensor) -> torch.Tensor:
    """``wave[idx]`` for a mono tensor; for a source, each row of ``idx`` is read as one span, channels averaged."""
    if not is_source(wave):
        return wave[idx]
    rows = []
    for row in idx:
        lo, hi = int(row.min()), int(row.max()) + 1
        chunk = wave.read(lo, hi)
        rows.append(chunk.float().mean(dim=0)[row - lo])
    return torch.stack(rows)


def clip_windows(num_samples: int, sample_rate: int, clip_duration: float, clips: int) -> list[tuple[int, int]]:
    """``clips`` windows ``[start, end)`` in samples, of ``clip_duration`` seconds each, with start times evenly
    spaced from 0 to ``duration - clip_duration`` (all at 0 for a short signal; ``end`` may then pass the end).

    Exact rational arithmetic, so windows land on the same samples as ImageBind's clip sampler.
    """
    duration = num_samples / sample_rate
    cd = Fraction(clip_duration)
    step = Fraction(Fraction(max(duration - clip_duration, 0)), max(clips - 1, 1))
    out = []
    for k in range(clips):
        start = step * k
        out.append((int(start * sample_rate), int((start + cd) * sample_rate)))
    return out


def resampled_windows(wave: "torch.Tensor | SampleSource", orig_sr: int, new_sr: int, starts: torch.Tensor,
                      length: int) -> torch.Tensor:
    """Windows ``[s, s + length)`` of ``torchaudio.functional.resample(wave, orig_sr, new_sr)`` -> ``(K, length)``.

    Only the input around each window is resampled (one batched call), aligned to the resampler's polyphase
    period so the values equal those of resampling the whole signal; samples past its end are zero. For a long
    file and a few short clips this is far cheaper than resampling everything. ``wave`` may be a
    :class:`SampleSource` (a lazy file): then only the input around each window is read from it.
    """
    T = wave.num_samples if is_source(wave) else wave.shape[-1]
    g = math.gcd(orig_sr, new_sr)
    in_step, out_step = orig_sr // g, new_sr // g
    n_out = math.ceil(new_sr * T / orig_sr)  # the full resample's length
    if in_step == out_step:
        in_len, pad_blocks, blocks = length, 0, None
    else:  # the sinc kernel reaches `width` input samples (in the reduced rate) around each output
        width = math.ceil(6 * in_step / (min(in_step, out_step) * 0.99))
        pad_blocks = math.ceil((width + in_step) / in_step) + 1
        blocks = math.ceil(length / out_step) + 1 + 2 * pad_blocks
        in_len = blocks * in_step
    first_block = torch.div(starts, out_step, rounding_mode="floor") - pad_blocks
    in_start = first_block * in_step
    idx = in_start[:, None] + torch.arange(in_len)
    valid = (idx >= 0) & (idx < T)
    segs = _gather(wave, idx.clamp(0, T - 1)) * valid
    if in_step != out_step:
        segs = resample(segs, orig_sr, new_sr)
        offset = starts - first_block * out_step
        segs = torch.gather(segs, 1, offset[:, None] + torch.arange(length))
    return segs * ((starts[:, None] + torch.arange(length)) < n_out)


class LogMelTransform:
    """Waveform -> normalized 128-bin kaldi log-mel clips, float32 ``(clips, 1, num_mel_bins, target_length)``.

    Accepts ``(waveform, sample_rate)`` (what :func:`read_audio` returns) or a bare 1-D / ``(channels, samples)``
    waveform assumed to be at ``sample_rate``; float samples, or int16/int32 PCM. Channels are averaged; audio is
    resampled to ``sample_rate``; ``clips`` windows of ``clip_duration`` s are spread evenly over the file (a short
    file is zero-padded); each clip's mean is removed; kaldi fbank (25 ms Hanning windows every 10 ms, HTK mel,
    no dither); frames are zero-padded or cropped to ``target_length``; then ``(x - mean) / std``.
    (ImageBind's bit-exact variant, with its in-place mean quirk, lives in :mod:`anybind.compat.preprocess`.)
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 128, target_length: int = 204,
                 clip_duration: float = 2.0, clips: int | None = 3, mean: float = AUDIO_MEAN, std: float = AUDIO_STD):
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.target_length = int(target_length)
        self.clip_duration = float(clip_duration)
        self.clips = int(clips) if clips else None
        self.mean, self.std = float(mean), float(std)
        if self.clip_duration * self.sample_rate < 400:
            raise ValueError(f"clip_duration {clip_duration} s is shorter than one 25 ms fbank window")

    def waveform(self, raw: Any, source: str | None) -> tuple[torch.Tensor, int]:
        """Validate the input -> (mono float32 (samples,), sample rate)."""
        sr = self.sample_rate
        if isinstance(raw, (tuple, list)):
            if len(raw) != 2 or not isinstance(raw[1], (int, float, np.number)) or raw[1] != int(raw[1]):
                raise InputError(source, "audio", f"expected (waveform, sample_rate) with a whole-number rate, got a "
                                                  f"{type(raw).__name__} of {len(raw)} items")
            raw, sr = raw[0], int(raw[1])
            if sr <= 0:
                raise InputError(source, "audio", f"invalid sample rate {sr}")
        wave = as_tensor(raw)
        if not isinstance(wave, torch.Tensor):
            raise InputError(source, "audio", f"expected a waveform tensor or (waveform, sample_rate), got "
                                              f"{describe(wave)}")
        if wave.ndim not in (1, 2):
            raise InputError(source, "audio", f"expected a 1-D or (channels, samples) waveform, got {describe(wave)}")
        if wave.numel() == 0:
            raise InputError(source, "audio", f"zero-length audio: {describe(wave)}")
        if wave.ndim == 2 and wave.shape[0] > wave.shape[1]:
            raise InputError(source, "audio", f"expected (channels, samples), got {describe(wave)} (samples first? "
                                              "transpose it)")
        if wave.dtype == torch.int16:
            wave = wave.float() / 32768.0
        elif wave.dtype == torch.int32:
            wave = wave.float() / 2147483648.0
        elif wave.is_floating_point():
            wave = wave.float()
        else:
            raise InputError(source, "audio", f"expected float or int16/int32 samples, got {describe(wave)}")
        if not torch.isfinite(wave).all():
            raise InputError(source, "audio", "samples contain NaN or inf")
        mono = wave.mean(dim=0) if wave.ndim == 2 else wave
        return mono, sr

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        if is_source(raw) and not raw.seekable:
            raw = raw.read_all()  # a format that cannot seek: decoded whole (within the reader's limit)
        if is_source(raw):
            mono, sr, num = raw, int(raw.sample_rate), int(raw.num_samples)  # read window by window below
        else:
            mono, sr = self.waveform(raw, source)
            num = mono.shape[0]
        n_out = math.ceil(self.sample_rate * num / sr)
        windows = clip_windows(n_out, self.sample_rate, self.clip_duration, self.clips or 1)
        distinct = list(dict.fromkeys(windows))  # a file shorter than a clip: every window is the same one
        starts = torch.tensor([a for a, _ in windows])
        longest = max(b - a for a, b in windows)
        segs = resampled_windows(mono, sr, self.sample_rate, starts, longest)
        clips = []
        for a, b in distinct:
            k = windows.index((a, b))
            real = max(0, min(b, n_out) - a)  # samples inside the file; the rest stays zero (silence)
            clip = segs[k, : b - a].clone()
            clip[:real] -= clip[:real].mean()
            clips.append(clip)
        lengths = {c.shape[0] for c in clips}
        fbank = kaldi_fbank(self.sample_rate, self.num_mel_bins)
        if len(lengths) == 1:  # the usual case: every clip as long, one batched filterbank
            mels = list(fbank(torch.stack(clips)).transpose(1, 2))  # (mel, frames) each
        else:
            mels = [fbank(c.unsqueeze(0))[0].t() for c in clips]
        out = []
        for mel in mels:
            pad = self.target_length - mel.shape[1]
            mel = F.pad(mel, (0, pad)) if pad > 0 else mel[:, : self.target_length]
            out.append((mel - self.mean) / self.std)
        index = {w: k for k, w in enumerate(distinct)}
        mel = torch.stack([out[index[w]] for w in windows]).unsqueeze(1).float()  # (clips, 1, mel, frames)
        return mel if self.clips else mel[0]

    def __repr__(self) -> str:
        return (f"LogMelTransform(sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
                f"target_length={self.target_length}, clip_duration={self.clip_duration}, clips={self.clips})")




def audio_transform(contract: dict) -> LogMelTransform:
    """Contract keys: ``sample_rate``, ``num_mel_bins``, ``target_length``, ``clip_duration``, ``clips`` (0 or None:
    no clip dimension), ``mean``, ``std`` (all required)."""
    name = "audio_transform"
    c = read_contract(contract, name, ("sample_rate", "num_mel_bins", "target_length", "clip_duration", "clips",
                                       "mean", "std"))
    clips = c["clips"]
    if clips not in (None, 0):
        clips = positive_int(clips, "clips", name)
    for key in ("mean", "std"):
        if isinstance(c[key], bool) or not isinstance(c[key], (int, float, np.number)):
            raise ContractError(f"{name}: contract key {key!r} must be a number, got {c[key]!r}")
    try:
        return LogMelTransform(
            sample_rate=positive_int(c["sample_rate"], "sample_rate", name),
            num_mel_bins=positive_int(c["num_mel_bins"], "num_mel_bins", name),
            target_length=positive_int(c["target_length"], "target_length", name),
            clip_duration=positive_float(c["clip_duration"], "clip_duration", name), clips=clips,
            mean=c["mean"], std=positive_float(c["std"], "std", name),
        )
    except ValueError as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError(f"{name}: {exc}") from None
