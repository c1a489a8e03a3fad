"""Kaldi log-mel filterbanks for several clips at once, and a polyphase resampler, with their tables built once.

:class:`KaldiFbank` computes what ``torchaudio.compliance.kaldi.fbank`` does for the options
:class:`~anybind.data.transforms.audio.LogMelTransform` uses (25 ms Hanning windows every 10 ms, frames that fit
whole, per-frame DC removal, pre-emphasis 0.97, power spectrum, HTK mel bins from 20 Hz to Nyquist, no dither, no
energy column), but keeps the window and the mel matrix between calls and frames every clip of a file in one
batch: one FFT and one matrix product per file instead of one each per clip, and no tables rebuilt per clip. The
values are those of ``kaldi.fbank`` (the same operations in the same order; the one matrix product over all clips
may round differently in the last bit).

:func:`resample` is ``torchaudio.functional.resample`` with the sinc kernel of each ``(orig, new)`` rate pair
computed once per process.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["KaldiFbank", "kaldi_fbank", "resample"]

PREEMPHASIS = 0.97


class KaldiFbank:
    """``(K, samples)`` float32 clips -> ``(K, frames, num_mel_bins)`` log-mel energies (see the module docstring)."""

    def __init__(self, sample_rate: int, num_mel_bins: int, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0):
        from torchaudio.compliance import kaldi

        self.sample_rate, self.num_mel_bins = int(sample_rate), int(num_mel_bins)
        self.window_shift = int(sample_rate * frame_shift_ms * 0.001)
        self.window_size = int(sample_rate * frame_length_ms * 0.001)
        self.padded = 1 << (self.window_size - 1).bit_length()  # the next power of two, as kaldi rounds
        self.window = torch.hann_window(self.window_size, periodic=False, dtype=torch.float32)
        mel, _ = kaldi.get_mel_banks(self.num_mel_bins, self.padded, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
        self.mel = F.pad(mel.float(), (0, 1))  # (mel, padded // 2 + 1): kaldi's zero column for the Nyquist bin
        self.epsilon = torch.tensor(torch.finfo(torch.float32).eps)

    def frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` (only windows that fit whole; 0 below one window)."""
        return 0 if num_samples < self.window_size else 1 + (num_samples - self.window_size) // self.window_shift

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 2 or clips.shape[1] < self.window_size:
            raise ValueError(f"KaldiFbank expects (clips, samples) with at least {self.window_size} samples, got "
                             f"{tuple(clips.shape)}")
        k = clips.shape[0]
        x = clips.float().unfold(1, self.window_size, self.window_shift)  # (K, m, window)
        x = x - x.mean(dim=2, keepdim=True)
        previous = torch.cat([x[..., :1], x[..., :-1]], dim=-1)  # kaldi's replicate-padded shift
        x = (x - PREEMPHASIS * previous) * self.window
        if self.padded != self.window_size:
            x = F.pad(x, (0, self.padded - self.window_size))
        spectrum = torch.fft.rfft(x).abs().pow(2.0)  # (K, m, padded // 2 + 1)
        m = spectrum.shape[1]
        energies = torch.mm(spectrum.reshape(k * m, -1), self.mel.T)
        return torch.max(energies, self.epsilon).log().view(k, m, self.num_mel_bins)


@functools.lru_cache(maxsize=16)
def kaldi_fbank(sample_rate: int, num_mel_bins: int) -> KaldiFbank:
    """The process's :class:`KaldiFbank` for ``(sample_rate, num_mel_bins)``, built on first use."""
    return KaldiFbank(sample_rate, num_mel_bins)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int):
    from torchaudio.functional import functional as AFF

    return AFF._get_sinc_resample_kernel(orig, new, math.gcd(orig, new), 6, 0.99, "sinc_interp_hann", None,
                                         torch.device("cpu"), torch.float32)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``torchaudio.functional.resample(wave, orig, new)`` (default Hann-windowed sinc) for float32 CPU input,
    its kernel cached per rate pair; any other input goes to torchaudio itself."""
    import torchaudio.functional as AF

    if orig == new:
        return wave
    if wave.dtype != torch.float32 or wave.device.type != "cpu":
        return AF.resample(wave, orig, new)
    try:
        from torchaudio.functional import functional as AFF

        kernel, width = _sinc_kernel(int(orig), int(new))
        g = math.gcd(int(orig), int(new))
        return AFF._apply_sinc_resample_kernel(wave, int(orig), int(new), g, kernel, width)
    except (AttributeError, TypeError):  # a torchaudio whose private helpers differ: its public function
        return AF.resample(wave, orig, new)
