"""The cached, batched kaldi filterbank and resampler give torchaudio's values, and the audio transform built on
them gives what it gave when it called torchaudio clip by clip."""

import math
import wave

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torchaudio.compliance import kaldi

from anybind.constants import AUDIO_MEAN, AUDIO_STD
from anybind.data.readers import open_audio
from anybind.data.transforms import audio_transform
from anybind.data.transforms.audio import clip_windows, is_source, resampled_windows
from anybind.data.transforms.fbank import KaldiFbank, kaldi_fbank, resample


def _torchaudio_fbank(clip, sr, bins):
    return kaldi.fbank(clip.unsqueeze(0), htk_compat=True, sample_frequency=sr, use_energy=False,
                       window_type="hanning", num_mel_bins=bins, dither=0.0, frame_length=25, frame_shift=10)


@pytest.mark.parametrize("sr,bins,n", [(16000, 128, 32000), (8000, 32, 8000), (16000, 64, 16001), (22050, 40, 9000)])
def test_fbank_equals_torchaudio_kaldi_fbank(sr, bins, n):
    g = torch.Generator().manual_seed(sr + bins)
    clips = torch.randn(3, n, generator=g) * torch.tensor([[0.3], [1e-3], [0.0]])  # loud, quiet, silent
    ours = KaldiFbank(sr, bins)(clips)
    for k in range(3):
        ref = _torchaudio_fbank(clips[k], sr, bins)
        assert ours[k].shape == ref.shape
        torch.testing.assert_close(ours[k], ref, atol=1e-5, rtol=0)
    assert kaldi_fbank(sr, bins) is kaldi_fbank(sr, bins)  # one per process


def test_fbank_refuses_a_clip_shorter_than_one_window():
    with pytest.raises(ValueError, match="at least 400 samples"):
        KaldiFbank(16000, 128)(torch.zeros(1, 399))


@pytest.mark.parametrize("orig,new", [(8000, 16000), (44100, 16000), (16000, 8000), (22050, 16000)])
def test_cached_resample_equals_torchaudio(orig, new):
    w = torch.randn(2, 5000, generator=torch.Generator().manual_seed(orig))
    assert torch.equal(resample(w, orig, new), AF.resample(w, orig, new))
    assert torch.equal(resample(w, orig, orig), w)


def _reference_log_mel(wave1d, sr, c):
    """The transform as it was computed before: the resampled windows, then torchaudio's kaldi.fbank clip by clip."""
    target = c["sample_rate"]
    n_out = math.ceil(target * wave1d.shape[0] / sr)
    windows = clip_windows(n_out, target, c["clip_duration"], c["clips"] or 1)
    segs = resampled_windows(wave1d, sr, target, torch.tensor([a for a, _ in windows]),
                             max(b - a for a, b in windows))
    out = []
    for k, (a, b) in enumerate(windows):
        clip = segs[k, :b - a].clone()
        real = max(0, min(b, n_out) - a)
        clip[:real] -= clip[:real].mean()
        fb = _torchaudio_fbank(clip, target, c["num_mel_bins"]).t()
        pad = c["target_length"] - fb.shape[1]
        fb = F.pad(fb, (0, pad)) if pad > 0 else fb[:, :c["target_length"]]
        out.append((fb - c["mean"]) / c["std"])
    mel = torch.stack(out).unsqueeze(1)
    return mel if c["clips"] else mel[0]


CONTRACTS = [
    dict(sample_rate=16000, num_mel_bins=128, target_length=204, clip_duration=2.0, clips=3),  # audio_vit_tiny
    dict(sample_rate=8000, num_mel_bins=32, target_length=100, clip_duration=1.0, clips=1),  # the digits recipe
    dict(sample_rate=16000, num_mel_bins=64, target_length=100, clip_duration=1.0, clips=None),
]


@pytest.mark.parametrize("contract", CONTRACTS)
@pytest.mark.parametrize("seconds,sr", [(0.4, 8000), (1.3, 8000), (5.0, 44100), (3.0, 16000)])
def test_log_mel_transform_equals_the_clip_by_clip_computation(contract, seconds, sr, tmp_path):
    c = {**contract, "mean": AUDIO_MEAN, "std": AUDIO_STD}
    rng = np.random.default_rng(int(seconds * 10) + sr)
    t = np.arange(int(seconds * sr)) / sr
    samples = (0.3 * np.sin(2 * np.pi * 300 * t) * rng.random(t.shape)).astype(np.float32)
    ref = _reference_log_mel(torch.from_numpy(samples), sr, c)
    tf = audio_transform(c)
    from_tensor = tf((torch.from_numpy(samples), sr))
    path = tmp_path / "a.wav"
    pcm = (samples * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(sr), f.writeframes(pcm.tobytes())
    from_file = tf(open_audio(path))
    ref_file = _reference_log_mel(torch.from_numpy(pcm.astype(np.float32) / 32768.0), sr, c)
    assert from_tensor.shape == ref.shape
    torch.testing.assert_close(from_tensor, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_file, ref_file, atol=1e-5, rtol=0)


def test_is_source_agrees_with_the_protocol_check(tmp_path):
    from anybind.data.transforms.audio import SampleSource

    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000), f.writeframes(b"\x01\x00" * 800)
    for raw in (open_audio(path), torch.zeros(10), (torch.zeros(10), 8000), np.zeros(10), [1.0, 2.0]):
        assert is_source(raw) == isinstance(raw, SampleSource)
        assert is_source(raw) == isinstance(raw, SampleSource)  # the remembered answer too
