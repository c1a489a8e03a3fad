"""Transforms: raw data -> one sample tensor, parameterized by an encoder's input contract.

Each factory takes the contract dict and returns a small picklable callable (DataLoader workers receive a copy):

* :func:`image_transform` -> :class:`ImageTransform`: PIL / uint8 / float image -> float32 ``(3, S, S)``
* :func:`text_transform` -> :class:`ClipTokenizerTransform`: ``str`` -> int64 ``(context_length,)``
* :func:`audio_transform` -> :class:`LogMelTransform`: waveform -> float32 ``(clips, 1, mel_bins, frames)``
* :func:`video_transform` -> :class:`VideoFrameTransform`: :class:`VideoSource` or frames ->
  float32 ``(clips, 3, frames, S, S)``
* :func:`points_transform` -> :class:`PointCloudTransform`: ``(N, 3|6)`` -> float32 ``(num_points, channels)``
* :func:`identity_transform` -> :class:`IdentityTransform`: preprocessed tensors (depth, thermal, imu)

When a contract has no ``clips`` (or ``clips`` is 0/None) audio and video samples carry no clip dimension.
Every callable takes ``(raw, source=None)``; ``source`` only names the input in error messages. Bad input raises
:class:`anybind.errors.InputError`. The accepted formats and contract keys are listed in ``docs/formats.md``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = [
    "ClipTokenizerTransform", "IdentityTransform", "ImageTransform", "LogMelTransform", "PointCloudTransform",
    "VideoFrameTransform", "audio_transform", "identity_transform", "image_transform", "points_transform",
    "text_transform", "video_transform",
]


def _as_tensor(raw: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(raw)) if isinstance(raw, np.ndarray) else raw


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


# ----------------------------------------------------------------------------------------------------- image


def _interpolation(name: str):
    from torchvision.transforms.v2 import InterpolationMode

    try:
        return InterpolationMode(name.lower())
    except ValueError:
        raise ValueError(f"unknown interpolation {name!r} (use bicubic, bilinear or nearest)") from None


def check_frames_tensor(x: torch.Tensor, modality: str, source: str | None, layout: str) -> torch.Tensor:
    """Validate ``(..., C, H, W)`` image data (uint8, or float in [0, 1]); 1 channel becomes 3."""
    if x.shape[-3] not in (1, 3):
        hint = " (channels last? use .permute to put channels first)" if x.shape[-1] in (1, 3) else ""
        raise InputError(source, modality, f"expected {layout} with 1 or 3 channels, got {_describe(x)}{hint}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise InputError(source, modality, f"image has no pixels: {_describe(x)}")
    if x.dtype == torch.uint8:
        pass
    elif x.is_floating_point():
        if not torch.isfinite(x).all():
            raise InputError(source, modality, "pixel values contain NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(source, modality, f"float pixels must lie in [0, 1], found [{lo:.3g}, {hi:.3g}] "
                                               "(already normalized, or 0-255 floats?)")
        x = x.float()
    else:
        raise InputError(source, modality, f"expected uint8 or float pixels, got {_describe(x)}")
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if x.shape[-3] == 1 else x


class _Frames:
    """Resize the shorter side, center-crop, scale to [0, 1] and normalize a batch of (..., 3, H, W) tensors."""

    def __init__(self, image_size: int, mean, std, interpolation: str):
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        _interpolation(interpolation)  # fail at construction on a bad name

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float [0, 1] ``(N, 3, H, W)`` -> normalized float32 ``(N, 3, S, S)``."""
        import torchvision.transforms.v2.functional as TF

        mode = _interpolation(self.interpolation)
        x = TF.resize(x, [self.image_size], interpolation=mode, antialias=True)  # uint8 stays uint8 (fast path)
        x = TF.center_crop(x, [self.image_size, self.image_size])
        x = x.float().div(255) if x.dtype == torch.uint8 else x.clamp(0.0, 1.0)
        return TF.normalize(x, self.mean, self.std)

    def pil(self, img) -> torch.Tensor:
        """PIL RGB image -> normalized float32 ``(3, S, S)``, resized by PIL (the reference CLIP/ImageBind path)."""
        import torchvision.transforms.v2.functional as TF

        img = TF.resize(img, [self.image_size], interpolation=_interpolation(self.interpolation))
        img = TF.center_crop(img, [self.image_size, self.image_size])
        x = TF.pil_to_tensor(img).float().div(255)
        return TF.normalize(x, self.mean, self.std)


class ImageTransform(_Frames):
    """PIL image, uint8 ``(3|1, H, W)`` or float ``(3|1, H, W)`` in [0, 1] -> float32 ``(3, S, S)``.

    Shorter side resized to ``image_size`` (antialiased), center crop, scaled to [0, 1], normalized.
    """

    def __init__(self, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, interpolation: str = "bicubic"):
        super().__init__(image_size, mean, std, interpolation)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        from PIL import Image

        if isinstance(raw, Image.Image):
            from .readers import to_rgb

            if raw.width == 0 or raw.height == 0:
                raise InputError(source, "image", f"image has no pixels ({raw.width}x{raw.height})")
            return self.pil(to_rgb(raw))
        raw = _as_tensor(raw)
        if not isinstance(raw, torch.Tensor):
            raise InputError(source, "image", f"expected a PIL image or a (3, H, W) tensor, got {_describe(raw)}")
        if raw.ndim != 3:
            raise InputError(source, "image", f"expected one (3, H, W) image, got {_describe(raw)}")
        x = check_frames_tensor(raw, "image", source, "(3, H, W)")
        return self.tensor(x.unsqueeze(0))[0]

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, interpolation={self.interpolation!r})"


def image_transform(contract: dict) -> ImageTransform:
    return ImageTransform(
        image_size=contract.get("image_size", 224), mean=contract.get("mean", CLIP_MEAN),
        std=contract.get("std", CLIP_STD), interpolation=contract.get("interpolation", "bicubic"),
    )


# ------------------------------------------------------------------------------------------------------ text

_TOKENIZERS: dict[str, Any] = {}  # one per process (DataLoader workers build their own on first use)
_TOKENIZER_MODELS = {"clip_bpe": "ViT-B-32"}


def get_tokenizer(name: str = "clip_bpe"):
    """The cached tokenizer for ``name`` (``clip_bpe``: CLIP's BPE from open_clip, vocabulary shipped offline)."""
    if name not in _TOKENIZERS:
        if name not in _TOKENIZER_MODELS:
            raise ValueError(f"unknown tokenizer {name!r} (known: {', '.join(_TOKENIZER_MODELS)})")
        import open_clip

        _TOKENIZERS[name] = open_clip.get_tokenizer(_TOKENIZER_MODELS[name])
    return _TOKENIZERS[name]


class ClipTokenizerTransform:
    """``str`` -> int64 ``(context_length,)``: SOT, tokens, EOT, zero padding; a long text keeps EOT last.

    An int64 tensor of exactly ``context_length`` ids is accepted as already tokenized.
    """

    def __init__(self, context_length: int = 77, tokenizer: str = "clip_bpe"):
        if tokenizer not in _TOKENIZER_MODELS:
            raise ValueError(f"unknown tokenizer {tokenizer!r} (known: {', '.join(_TOKENIZER_MODELS)})")
        self.context_length = int(context_length)
        self.tokenizer = tokenizer

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        raw = _as_tensor(raw)
        if isinstance(raw, torch.Tensor):
            if raw.ndim == 1 and len(raw) == self.context_length and not raw.is_floating_point():
                return raw.long()
            raise InputError(source, "text", f"expected a string or {self.context_length} token ids, got "
                                             f"{_describe(raw)}")
        if not isinstance(raw, str):
            raise InputError(source, "text", f"expected a string, got {_describe(raw)}")
        if not raw.strip():
            raise InputError(source, "text", "empty text")
        return get_tokenizer(self.tokenizer)([raw], context_length=self.context_length)[0]

    def __repr__(self) -> str:
        return f"ClipTokenizerTransform(context_length={self.context_length}, tokenizer={self.tokenizer!r})"


def text_transform(contract: dict) -> ClipTokenizerTransform:
    return ClipTokenizerTransform(contract.get("context_length", 77), contract.get("tokenizer", "clip_bpe"))


# ----------------------------------------------------------------------------------------------------- audio


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


def resampled_windows(wave: torch.Tensor, orig_sr: int, new_sr: int, starts: torch.Tensor, length: int
                      ) -> torch.Tensor:
    """Windows ``[s, s + length)`` of ``torchaudio.functional.resample(wave, orig_sr, new_sr)`` -> ``(K, length)``.

    Only the input around each window is resampled (one batched call), aligned to the resampler's polyphase
    period so the values equal those of resampling the whole signal; samples past its end are zero. For a long
    file and a few short clips this is far cheaper than resampling everything.
    """
    T = wave.shape[-1]
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
    segs = wave[idx.clamp(0, T - 1)] * valid
    if in_step != out_step:
        import torchaudio.functional as AF

        segs = AF.resample(segs, orig_sr, new_sr)
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
                 clip_duration: float = 2.0, clips: int | None = 3, mean: float = -4.268, std: float = 9.138):
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
        wave = _as_tensor(raw)
        if not isinstance(wave, torch.Tensor):
            raise InputError(source, "audio", f"expected a waveform tensor or (waveform, sample_rate), got "
                                              f"{_describe(wave)}")
        if wave.ndim not in (1, 2):
            raise InputError(source, "audio", f"expected a 1-D or (channels, samples) waveform, got {_describe(wave)}")
        if wave.numel() == 0:
            raise InputError(source, "audio", f"zero-length audio: {_describe(wave)}")
        if wave.ndim == 2 and wave.shape[0] > wave.shape[1]:
            raise InputError(source, "audio", f"expected (channels, samples), got {_describe(wave)} (samples first? "
                                              "transpose it)")
        if wave.dtype == torch.int16:
            wave = wave.float() / 32768.0
        elif wave.dtype == torch.int32:
            wave = wave.float() / 2147483648.0
        elif wave.is_floating_point():
            wave = wave.float()
        else:
            raise InputError(source, "audio", f"expected float or int16/int32 samples, got {_describe(wave)}")
        if not torch.isfinite(wave).all():
            raise InputError(source, "audio", "samples contain NaN or inf")
        mono = wave.mean(dim=0) if wave.ndim == 2 else wave
        return mono, sr

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        from torchaudio.compliance import kaldi

        mono, sr = self.waveform(raw, source)
        n_out = math.ceil(self.sample_rate * mono.shape[0] / sr)
        windows = clip_windows(n_out, self.sample_rate, self.clip_duration, self.clips or 1)
        starts = torch.tensor([a for a, _ in windows])
        longest = max(b - a for a, b in windows)
        segs = resampled_windows(mono, sr, self.sample_rate, starts, longest)
        out = []
        for k, (a, b) in enumerate(windows):
            real = max(0, min(b, n_out) - a)  # samples inside the file; the rest stays zero (silence)
            clip = segs[k, : b - a].clone()
            clip[:real] -= clip[:real].mean()
            fbank = kaldi.fbank(
                clip.unsqueeze(0), htk_compat=True, sample_frequency=self.sample_rate, use_energy=False,
                window_type="hanning", num_mel_bins=self.num_mel_bins, dither=0.0, frame_length=25, frame_shift=10,
            ).t()  # (mel, frames)
            pad = self.target_length - fbank.shape[1]
            fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, : self.target_length]
            out.append((fbank - self.mean) / self.std)
        mel = torch.stack(out).unsqueeze(1).float()  # (clips, 1, mel, frames)
        return mel if self.clips else mel[0]

    def __repr__(self) -> str:
        return (f"LogMelTransform(sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
                f"target_length={self.target_length}, clip_duration={self.clip_duration}, clips={self.clips})")


def audio_transform(contract: dict) -> LogMelTransform:
    return LogMelTransform(
        sample_rate=contract.get("sample_rate", 16000), num_mel_bins=contract.get("num_mel_bins", 128),
        target_length=contract.get("target_length", 204), clip_duration=contract.get("clip_duration", 2.0),
        clips=contract.get("clips", 3), mean=contract.get("mean", -4.268), std=contract.get("std", 9.138),
    )


# ----------------------------------------------------------------------------------------------------- video


def frame_indices(num_frames: int, clip_frames: int, clips: int, frames: int) -> torch.Tensor:
    """``(clips, frames)`` frame indices: clip starts evenly spaced over the video, each clip ``clip_frames``
    long, ``frames`` picks spread uniformly over each clip (first and last frame included)."""
    span = max(1, min(num_frames, clip_frames))
    starts = torch.linspace(0, num_frames - span, clips).round().long()
    inner = torch.linspace(0, span - 1, frames).floor().long()
    return starts[:, None] + inner


class VideoFrameTransform(_Frames):
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
        from .readers import VideoSource

        fps = None
        if isinstance(raw, (tuple, list)) and len(raw) == 2 and isinstance(raw[1], (int, float)):
            raw, fps = raw[0], float(raw[1])
        raw = _as_tensor(raw)
        if isinstance(raw, VideoSource):
            idx = self.indices(raw.num_frames, raw.fps)
            unique, inverse = torch.unique(idx.flatten(), sorted=True, return_inverse=True)
            try:
                frames = raw.get_frames(unique).permute(0, 3, 1, 2)  # (U, 3, H, W) uint8: only the kept frames
            finally:
                raw.close()  # the decoder's threads go now, not whenever the source is collected
        elif isinstance(raw, torch.Tensor):
            if raw.ndim != 4:
                raise InputError(source, "video", f"expected frames (T, 3, H, W), got {_describe(raw)}")
            if raw.shape[0] == 0:
                raise InputError(source, "video", "video has no frames")
            x = check_frames_tensor(raw, "video", source, "frames (T, 3, H, W)")
            idx = self.indices(x.shape[0], fps)
            unique, inverse = torch.unique(idx.flatten(), sorted=True, return_inverse=True)
            frames = x[unique]
        else:
            raise InputError(source, "video", f"expected a video file, a VideoSource or frames (T, 3, H, W), got "
                                              f"{_describe(raw)}")
        out = self.tensor(frames)[inverse]  # (clips * frames, 3, S, S)
        out = out.view(self.clips or 1, self.frames, 3, self.image_size, self.image_size).transpose(1, 2)
        out = out.contiguous()
        return out if self.clips else out[0]

    def __repr__(self) -> str:
        return (f"VideoFrameTransform(image_size={self.image_size}, frames={self.frames}, clips={self.clips}, "
                f"clip_duration={self.clip_duration})")


def video_transform(contract: dict) -> VideoFrameTransform:
    return VideoFrameTransform(
        image_size=contract.get("image_size", 224), mean=contract.get("mean", CLIP_MEAN),
        std=contract.get("std", CLIP_STD), frames=contract.get("frames", 2), clips=contract.get("clips", 5),
        clip_duration=contract.get("clip_duration", 2.0), interpolation=contract.get("interpolation", "bilinear"),
    )


# ---------------------------------------------------------------------------------------------------- points


class PointCloudTransform:
    """``(N, 3)`` xyz or ``(N, 6)`` xyz + rgb -> float32 ``(num_points, channels)``.

    xyz is centred and scaled into the unit sphere, then ``num_points`` points are chosen by farthest-point
    sampling (deterministic; points repeat when the cloud is smaller; a cloud of exactly ``num_points`` is kept in
    file order, since sampling all of its points would only reorder them). With ``channels == 6`` rgb in [0, 1] is
    appended (0.5 grey for a cloud without colour). A cloud of more than ``FPS_INPUT_FACTOR * num_points`` points
    is first thinned to that many by a seeded random choice, which keeps FPS fast on large scans.
    """

    FPS_INPUT_FACTOR = 16

    def __init__(self, num_points: int = 1024, channels: int = 3, min_points: int = 16):
        if channels not in (3, 6):
            raise ValueError(f"points channels must be 3 (xyz) or 6 (xyz + rgb), got {channels}")
        self.num_points, self.channels, self.min_points = int(num_points), int(channels), int(min_points)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        from ..layers.pointops import farthest_point_sample, normalize_unit_sphere

        x = _as_tensor(raw)
        if not isinstance(x, torch.Tensor):
            raise InputError(source, "points", f"expected a point cloud tensor (N, 3) or (N, 6), got {_describe(x)}")
        if x.ndim != 2 or x.shape[1] not in (3, 6):
            raise InputError(source, "points", f"expected a point cloud (N, 3) or (N, 6), got {_describe(x)}")
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.int16)):
            raise InputError(source, "points", f"expected numeric points, got {_describe(x)}")
        if x.shape[0] < self.min_points:
            raise InputError(source, "points", f"too few points: {x.shape[0]}, need at least {self.min_points}")
        x = x.float()
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise InputError(source, "points", f"{int(bad.sum())} point(s) have NaN or inf values")
        if x.shape[0] > self.FPS_INPUT_FACTOR * self.num_points:  # FPS is O(N * num_points): thin huge scans first
            g = torch.Generator().manual_seed(0)
            keep = torch.randperm(x.shape[0], generator=g)[: self.FPS_INPUT_FACTOR * self.num_points]
            x = x[keep.sort().values]
        xyz = normalize_unit_sphere(x[:, :3])
        if xyz.shape[0] == self.num_points:  # FPS would only reorder: keep every point in file order
            idx = torch.arange(self.num_points)
        else:
            idx = farthest_point_sample(xyz, self.num_points)
        out = xyz[idx]
        if self.channels == 6:
            rgb = x[idx, 3:6].clamp(0.0, 1.0) if x.shape[1] == 6 else torch.full_like(out, 0.5)
            out = torch.cat([out, rgb], dim=1)
        return out.contiguous()

    def __repr__(self) -> str:
        return f"PointCloudTransform(num_points={self.num_points}, channels={self.channels})"


def points_transform(contract: dict) -> PointCloudTransform:
    return PointCloudTransform(contract.get("num_points", 1024), contract.get("channels", 3),
                               contract.get("min_points", 16))


# ------------------------------------------------------------------------------------------- preprocessed


class IdentityTransform:
    """Pass a preprocessed tensor through (ImageBind-compatible depth/thermal/imu). With ``shape`` in the
    contract, the tensor must have exactly that shape; floating tensors come back as float32."""

    def __init__(self, modality: str = "tensor", shape: tuple[int, ...] | None = None):
        self.modality = modality
        self.shape = tuple(int(s) for s in shape) if shape is not None else None

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        x = _as_tensor(raw)
        if not isinstance(x, torch.Tensor):
            raise InputError(source, self.modality, f"expected a tensor, got {_describe(x)}")
        if self.shape is not None and tuple(x.shape) != self.shape:
            raise InputError(source, self.modality, f"expected shape {self.shape}, got {_describe(x)}")
        return x.float() if x.is_floating_point() else x

    def __repr__(self) -> str:
        return f"IdentityTransform(modality={self.modality!r}, shape={self.shape})"


def identity_transform(contract: dict) -> IdentityTransform:
    return IdentityTransform(contract.get("modality", "tensor"), contract.get("shape"))
