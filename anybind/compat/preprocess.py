"""ImageBind-parity preprocessing: the same ops in the same order as ImageBind's data loading, so that tensors
match bit for bit (text ids exactly, images exactly, audio to float rounding).

These are transform factories with the signature of :mod:`anybind.modality`'s (``factory(contract) -> fn(raw)``);
an encoder selects them with ``input_contract["compat"] == "imagebind"``. Like every transform they take decoded
data only; :mod:`anybind.compat.loading` decodes files the way ImageBind does and batches paths through them.

Behaviours kept on purpose for parity (documented in docs/imagebind.md):

* audio clips overlap (3 clips of 2 s over a 3 s file start at 0, 0.5 and 1 s) and ImageBind subtracts each clip's
  mean *in place on the shared waveform*, so later clips see samples already shifted by earlier clips' means.
  ``contract["inplace_mean"]`` (default true) reproduces that; false subtracts each clip's mean from a copy.
* the fbank uses channel 0 only, after subtracting the mean over all channels.
* depth, thermal and imu take already-preprocessed tensors in ImageBind's layout (shape-checked, unchanged).
* videos: ``clips`` clips of ``clip_duration`` seconds evenly spaced over the video, the first and last frame of each
  clip (``frames`` frames spaced uniformly), bilinear short-side resize, ``spatial_crops`` crops (left/centre/right
  or top/centre/bottom). Only the kept frames are decoded.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD
from ..errors import InputError


# ------------------------------------------------------------------------------------------------ text
def text_transform(contract: dict) -> Callable[[Any], torch.Tensor]:
    """str -> int64 ``(context_length,)`` CLIP BPE ids: SOT, up to ``context_length - 2`` tokens, EOT, zeros.

    The ids of open_clip's CLIP tokenizer (ImageBind's own BPE vocabulary and rules), through
    :func:`anybind.data.transforms.text.token_ids`: the tokenizer module loaded without the rest of open_clip, built
    once per process, ftfy skipped for plain ASCII (where it has nothing to repair) and each word's ids kept."""
    from ..data.transforms.text import get_tokenizer, token_ids

    context_length = int(contract.get("context_length", 77))
    get_tokenizer("clip_bpe")

    def fn(raw: Any) -> torch.Tensor:
        if not isinstance(raw, str):
            raise InputError(None, "text", f"expected a string, found {type(raw).__name__}")
        return token_ids(raw, context_length)

    return fn


# ------------------------------------------------------------------------------------------------ image
def image_transform(contract: dict) -> Callable[[Any], torch.Tensor]:
    """PIL image / path / uint8 (3,H,W) / float (3,H,W) in [0,1] -> float32 (3, S, S).

    PIL bicubic resize of the short side to S (torchvision ``Resize`` on the PIL image), centre crop, /255, CLIP
    mean/std. uint8 tensors go through PIL so they match files exactly; float tensors are resized in torch
    (bicubic, antialiased), which is close to but not bit-identical with PIL.
    """
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    size = int(contract.get("image_size", 224))
    mean = tuple(contract.get("mean", CLIP_MEAN))
    std = tuple(contract.get("std", CLIP_STD))
    pil_pipeline = T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size),
                              T.ToTensor(), T.Normalize(mean=mean, std=std)])

    def fn(raw: Any) -> torch.Tensor:
        if isinstance(raw, torch.Tensor):
            if raw.ndim != 3 or raw.shape[0] != 3:
                raise InputError(None, "image", f"expected a (3, H, W) tensor, found shape {tuple(raw.shape)}")
            if raw.dtype == torch.uint8:
                raw = TF.to_pil_image(raw)
            else:
                x = TF.resize(raw.float(), size, interpolation=InterpolationMode.BICUBIC, antialias=True)
                return TF.normalize(TF.center_crop(x, size), mean=mean, std=std)
        if not hasattr(raw, "convert"):
            raise InputError(None, "image", f"expected a PIL image or a tensor, found {type(raw).__name__}")
        if raw.mode != "RGB":
            raw = raw.convert("RGB")
        return pil_pipeline(raw)

    return fn


# ------------------------------------------------------------------------------------------------ audio
def clip_windows(duration: float, clip_duration: float, clips: int) -> list[tuple[Fraction, Fraction]]:
    """``clips`` windows of ``clip_duration`` seconds with evenly spaced starts from 0 to ``duration - clip``
    (exact rational arithmetic, as ImageBind's clip sampler). A shorter file gives windows starting at 0."""
    span = Fraction(max(duration - clip_duration, 0))
    length = Fraction(clip_duration)
    if clips == 1:
        return [(Fraction(0), length)]
    return [(span * i / (clips - 1), span * i / (clips - 1) + length) for i in range(clips)]


def _as_waveform(raw: Any, default_rate: int) -> tuple[torch.Tensor, int]:
    if hasattr(raw, "read_all"):  # a lazy audio file from the registered reader: ImageBind decodes it whole
        raw = raw.read_all()
    if isinstance(raw, tuple):
        wav, sr = raw
    else:
        wav, sr = raw, default_rate
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if not isinstance(wav, torch.Tensor) or wav.ndim not in (1, 2):
        raise InputError(None, "audio", f"expected a waveform tensor (T,) or (C, T), found {type(wav).__name__}"
                         + (f" of shape {tuple(wav.shape)}" if isinstance(wav, torch.Tensor) else ""))
    if wav.ndim == 1:
        wav = wav.unsqueeze(0)
    if wav.shape[-1] == 0:
        raise InputError(None, "audio", "the waveform has no samples")
    return wav.float(), int(sr)


def audio_transform(contract: dict) -> Callable[[Any], torch.Tensor]:
    """(waveform (C,T), sr) / waveform / path -> float32 (clips, 1, num_mel_bins, target_length).

    ImageBind's operations in ImageBind's order (resample, then per clip: subtract its mean, kaldi fbank of channel 0,
    pad or cut to ``target_length``, normalize), computed with the tables built once per process
    (:mod:`anybind.data.transforms.fbank`: the resampler's sinc kernel, the window and the mel matrix) and every clip
    of a file in one FFT and one matrix product."""
    from ..data.transforms.fbank import kaldi_fbank, resample

    sample_rate = int(contract.get("sample_rate", 16000))
    mel_bins = int(contract.get("num_mel_bins", 128))
    target = int(contract.get("target_length", 204))
    clip_duration = float(contract.get("clip_duration", 2.0))
    clips = int(contract.get("clips", 3))
    mean, std = float(contract.get("mean", AUDIO_MEAN)), float(contract.get("std", AUDIO_STD))
    inplace = bool(contract.get("inplace_mean", True))
    min_samples = int(0.025 * sample_rate)  # one 25 ms fbank frame
    fbank = kaldi_fbank(sample_rate, mel_bins)

    def fn(raw: Any) -> torch.Tensor:
        wav, sr = _as_waveform(raw, sample_rate)
        if sr != sample_rate:
            wav = resample(wav, sr, sample_rate)
        else:
            wav = wav.clone()  # clips are mean-shifted in place below; never touch the caller's tensor
        n = wav.shape[1]
        windows = [(min(int(a * sample_rate), n), min(int(b * sample_rate), n))  # a window past the end stops there
                   for a, b in clip_windows(n / sample_rate, clip_duration, clips)]
        segments = []
        for a, b in windows:
            clip = wav[:, a:b]
            if inplace:
                clip -= clip.mean()  # in place on the shared waveform, as ImageBind does: later clips see the shift
                seg = clip[0].clone()  # this clip as its fbank sees it, before the next clip's shift
            else:
                seg = (clip - clip.mean())[0]
            segments.append(F.pad(seg, (0, min_samples - seg.shape[0])) if seg.shape[0] < min_samples else seg)
        if len({seg.shape[0] for seg in segments}) == 1:
            banks = fit(fbank(torch.stack(segments)))  # every clip in one FFT and one matrix product
        else:  # windows one sample apart after flooring (their frame counts may differ): one call per clip
            banks = torch.cat([fit(fbank(seg.unsqueeze(0))) for seg in segments])
        return ((banks - mean) / std).unsqueeze(1)

    def fit(banks: torch.Tensor) -> torch.Tensor:
        """(clips, frames, mel) -> (clips, mel, target_length): zero-padded or cut, as ImageBind does."""
        banks = banks.transpose(1, 2)
        frames = banks.shape[2]
        return F.pad(banks, (0, target - frames)) if frames < target else banks[:, :, :target]

    return fn


# ------------------------------------------------------------------------------------------------ video
def clip_frame_indices(num_frames: int, fps: float, clips: int, clip_duration: float, frames: int) -> list[list[int]]:
    """Frame indices kept per clip: the frames whose time ``i / fps`` lies in ``[start, end)`` of each clip window,
    subsampled to ``frames`` uniformly spaced ones (first and last for 2)."""
    out = []
    times = np.arange(num_frames) / fps
    for start, end in clip_windows(num_frames / fps, clip_duration, clips):
        inside = np.nonzero((times >= float(start)) & (times < float(end)))[0]
        if inside.size == 0:  # a window past the last frame: use the nearest frame
            inside = np.array([min(int(float(start) * fps), num_frames - 1)])
        pick = torch.linspace(0, inside.size - 1, frames).long().numpy()
        out.append([int(i) for i in inside[pick]])
    return out


def _short_side_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) float -> short side ``size`` (long side floored), bilinear, no antialias."""
    h, w = x.shape[-2:]
    new_h, new_w = (size, math.floor(w / h * size)) if h <= w else (math.floor(h / w * size), size)
    if (new_h, new_w) == (h, w):
        return x
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(1, -1, h, w), size=(new_h, new_w), mode="bilinear", align_corners=False)
    return y.reshape(*lead, new_h, new_w)


def _spatial_crops(x: torch.Tensor, size: int, crops: int) -> list[torch.Tensor]:
    """``crops`` square crops along the long side: 1 -> centre; 3 -> start, centre, end."""
    h, w = x.shape[-2:]
    y0, x0 = -(-(h - size) // 2), -(-(w - size) // 2)  # ceil, as a centre crop with an odd margin
    offsets = {1: ["c"], 3: ["s", "c", "e"]}.get(crops)
    if offsets is None:
        raise ValueError(f"spatial_crops must be 1 or 3, got {crops}")
    out = []
    for o in offsets:
        yy, xx = y0, x0
        if o != "c":
            if h > w:
                yy = 0 if o == "s" else h - size
            else:
                xx = 0 if o == "s" else w - size
        out.append(x[..., yy:yy + size, xx:xx + size])
    return out


def video_transform(contract: dict) -> Callable[[Any], torch.Tensor]:
    """Video source / path / frames tensor (T,3,H,W) [/ (frames, fps)] ->
    float32 (clips * spatial_crops, 3, frames, S, S); only the kept frames are decoded."""
    size = int(contract.get("image_size", 224))
    mean = torch.tensor(contract.get("mean", CLIP_MEAN), dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(contract.get("std", CLIP_STD), dtype=torch.float32).view(3, 1, 1, 1)
    clips, frames = int(contract.get("clips", 5)), int(contract.get("frames", 2))
    clip_duration = float(contract.get("clip_duration", 2.0))
    crops = int(contract.get("spatial_crops", 3))

    def fn(raw: Any) -> torch.Tensor:
        if isinstance(raw, tuple):
            raw, fps = raw
        else:
            fps = float(contract.get("fps", 30.0))
        if isinstance(raw, torch.Tensor):
            if raw.ndim != 4 or raw.shape[1] != 3:
                raise InputError(None, "video", f"expected frames (T, 3, H, W), found shape {tuple(raw.shape)}")
            num_frames, fps_used = raw.shape[0], fps
            get = lambda idx: raw[idx]  # noqa: E731
        else:
            num_frames, fps_used = int(raw.num_frames), float(raw.fps)
            get = lambda idx: raw.get_frames(idx).permute(0, 3, 1, 2)  # noqa: E731  (T,H,W,3) -> (T,3,H,W)
        if num_frames < 1:
            raise InputError(None, "video", "the video has no frames")
        per_clip = clip_frame_indices(num_frames, fps_used, clips, clip_duration, frames)
        wanted = sorted({i for c in per_clip for i in c})
        decoded = get(wanted)
        decoded = decoded.float() / 255.0 if decoded.dtype == torch.uint8 else decoded.float()
        row = {i: r for r, i in enumerate(wanted)}
        out = []
        for idx in per_clip:
            clip = decoded[[row[i] for i in idx]].permute(1, 0, 2, 3)  # (3, T, H, W)
            clip = (_short_side_resize(clip, size) - mean) / std
            out.extend(_spatial_crops(clip, size, crops))
        return torch.stack(out).contiguous()

    return fn


# ------------------------------------------------------------------------------------------------ depth / thermal / imu
def _tensor_transform(modality: str, shape_of: Callable[[dict], tuple[int, ...]]):
    def factory(contract: dict) -> Callable[[Any], torch.Tensor]:
        shape = shape_of(contract)

        def fn(raw: Any) -> torch.Tensor:
            if isinstance(raw, np.ndarray):
                raw = torch.from_numpy(np.ascontiguousarray(raw))
            if not isinstance(raw, torch.Tensor):
                raise InputError(None, modality, f"expected a preprocessed tensor of shape {shape}, "
                                                 f"found {type(raw).__name__}")
            if tuple(raw.shape) != shape:
                raise InputError(None, modality, f"expected a preprocessed tensor of shape {shape} (ImageBind "
                                                 f"layout), found {tuple(raw.shape)}")
            return raw.float()

        return fn

    return factory


depth_transform = _tensor_transform("depth", lambda c: (c.get("channels", 1), c["image_size"], c["image_size"]))
thermal_transform = _tensor_transform("thermal", lambda c: (c.get("channels", 1), c["image_size"], c["image_size"]))
imu_transform = _tensor_transform("imu", lambda c: (c["channels"], c["length"]))
