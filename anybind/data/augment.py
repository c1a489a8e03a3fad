"""Training augmentations per modality, applied to the transformed tensors in the loader workers (never at
evaluation, never by ``model.embed``). Every one is off unless configured::

    # conf/modality/audio.yaml (or +modality.audio.augment.gain_db=6 on the command line)
    augment: {gain_db: 6, time_shift: 0.1, freq_masks: 2, freq_width: 12, time_masks: 2, time_width: 20}

* image / video (the last two dims are height x width; a video's frames share one draw):
  ``crop_scale: [0.5, 1.0]`` random-resized crop (area fraction; ``crop_ratio`` aspect range, default 3/4..4/3),
  ``flip: 0.5`` horizontal-flip probability, colour jitter as torchvision's ``ColorJitter`` draws it (applied by
  torchvision's functional ops to the pixels the contract's mean / std normalised, then normalised again):
  ``brightness: 0.4`` / ``contrast: 0.4`` / ``saturation: 0.4`` a factor in [1 - v, 1 + v], ``hue: 0.05`` a shift in
  [-v, v] of the hue circle, in that order.
* audio (log-mel clips ``(..., mel, frames)`` normalised by the contract's mean / std): ``gain_db: 6`` a random gain
  in [-6, +6] dB (an offset of the log energies), ``time_shift: 0.1`` a circular shift of up to 10% of the frames,
  SpecAugment ``freq_masks`` x ``freq_width`` and ``time_masks`` x ``time_width`` (masked cells take the mean: 0),
  ``freq_warp: [0.88, 1.12]`` a random stretch of the mel axis about its lowest bin (a pitch / vocal-tract-length
  perturbation: a factor of 1.1 moves every band 10% higher on the mel axis; bins warped in from beyond the top repeat
  the top bin), ``time_stretch: [0.85, 1.15]`` a random speed change (a factor of 1.1 plays 10% faster; frames
  beyond the end take each band's quietest level in the clip, its background), ``level_db: 20`` a random recording
  level in [-20, +20] dB applied as a quieter or louder recording would get it: the fbank's floor (digital silence)
  and the frames padded to the clip's length stay as they are, and no cell goes below the floor. ``gain_db`` instead
  moves every cell, floor included. ``noise_snr: [5, 30]`` mixes in background noise at a signal-to-noise ratio drawn
  in that range (dB, mean mel power of the recording's cells against the noise's), in the power domain
  (``log(P_signal + P_noise)``) over the recording's frames (padding stays padding); the noise is a clip of one of
  ``noise_files`` (audio files, or folders of them, through the same contract's transform, at a random offset) or,
  without files, generated noise of a random spectral slope (white to brown); ``noise_prob`` (default 1) is the
  share of samples that get it.
* points ``(N, 3 | 6)``: ``rotate: true`` a random rotation about the gravity axis (``up_axis``, default 1 = y),
  ``scale: [0.8, 1.25]`` anisotropic scaling, ``jitter: 0.01`` Gaussian noise (clipped at 5 sigma), ``dropout: 0.2``
  the largest fraction of points replaced by the first point (the shape keeps its size).

Each sample's draws come from a generator seeded by the run's seed, the epoch and the sample, so an epoch is
the same on every run and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import glob
import math
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..constants import AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD
from ..errors import InputError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

KEYS = {
    "image": {"crop_scale", "crop_ratio", "flip", "brightness", "contrast", "saturation", "hue"},
    "video": {"crop_scale", "crop_ratio", "flip", "brightness", "contrast", "saturation", "hue"},
    "audio": {"gain_db", "time_shift", "freq_masks", "freq_width", "time_masks", "time_width", "freq_warp",
              "time_stretch", "level_db", "noise_snr", "noise_files", "noise_prob"},
    "points": {"rotate", "up_axis", "scale", "jitter", "dropout"},
}


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def sample_generator(*parts: Any) -> torch.Generator:
    """A generator seeded from ints and strings (a sample id, a modality) reproducibly across processes."""
    seed = 0
    for p in parts:
        v = p if isinstance(p, int) else zlib.crc32(str(p).encode())
        seed = (seed * 1_000_003 + v) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ image / video
def resized_crop(x: torch.Tensor, g: torch.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    H, W = x.shape[-2:]
    for _ in range(10):
        area = H * W * _u(g, *scale)
        r = math.exp(_u(g, math.log(ratio[0]), math.log(ratio[1])))
        h, w = int(round(math.sqrt(area / r))), int(round(math.sqrt(area * r)))
        if 0 < h <= H and 0 < w <= W:
            break
    else:
        h, w = H, W
    top = int(torch.randint(H - h + 1, (), generator=g))
    left = int(torch.randint(W - w + 1, (), generator=g))
    crop = x[..., top:top + h, left:left + w]
    lead = crop.shape[:-2]
    out = F.interpolate(crop.reshape(-1, 1, h, w), size=(H, W), mode="bilinear", align_corners=False,
                        antialias=h > H or w > W)
    return out.reshape(*lead, H, W)


def color_jitter(x: torch.Tensor, g: torch.Generator, channel_dim: int, mean: torch.Tensor, std: torch.Tensor,
                 brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0) -> torch.Tensor:
    """Normalised RGB ``x`` (channels at ``channel_dim``) with torchvision's brightness, contrast, saturation and hue
    adjustments, factors drawn from ``g`` as ``ColorJitter`` draws them, one draw for the whole tensor."""
    from torchvision.transforms.v2 import functional as TF

    draws = [(TF.adjust_brightness, _u(g, max(0.0, 1 - brightness), 1 + brightness)) if brightness else None,
             (TF.adjust_contrast, _u(g, max(0.0, 1 - contrast), 1 + contrast)) if contrast else None,
             (TF.adjust_saturation, _u(g, max(0.0, 1 - saturation), 1 + saturation)) if saturation else None,
             (TF.adjust_hue, _u(g, -hue, hue)) if hue else None]
    shape = [1] * x.ndim
    shape[channel_dim] = 3
    rgb = (x * std.view(shape) + mean.view(shape)).clamp(0.0, 1.0).movedim(channel_dim, -3)
    for d in draws:
        if d is not None:
            rgb = d[0](rgb, d[1])
    return (rgb.movedim(-3, channel_dim) - mean.view(shape)) / std.view(shape)


def image_augment(p: Mapping[str, Any], contract: Mapping[str, Any] | None = None, modality: str = "image") -> Augment:
    channel_dim = -3 if modality == "image" else -4  # image (3, H, W); video (clips, 3, frames, H, W)
    scale, ratio, flip = p.get("crop_scale"), tuple(p.get("crop_ratio") or (3 / 4, 4 / 3)), float(p.get("flip", 0.0))
    jitter = {k: float(p.get(k) or 0.0) for k in ("brightness", "contrast", "saturation", "hue")}
    for k, v in jitter.items():
        if v < 0 or (k == "hue" and v > 0.5):
            raise ValueError(f"modality.{modality}.augment.{k} must be in [0, {0.5 if k == 'hue' else 'inf'}], got {v}")
    contract = contract or {}
    mean = torch.tensor(contract.get("mean", CLIP_MEAN), dtype=torch.float32)
    std = torch.tensor(contract.get("std", CLIP_STD), dtype=torch.float32)

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if scale:
            x = resized_crop(x, g, tuple(scale), ratio)
        if flip and _u(g) < flip:
            x = x.flip(-1)
        if any(jitter.values()):
            x = color_jitter(x, g, channel_dim, mean.to(x.dtype), std.to(x.dtype), **jitter)
        return x.contiguous()

    return fn


# ------------------------------------------------------------------------------------------------ audio
def resample_axis(x: torch.Tensor, dim: int, factor: float, fill: float | torch.Tensor | None = None) -> torch.Tensor:
    """``x`` resampled along ``dim`` so that output position ``i`` reads input position ``i * factor`` (linear
    interpolation). Positions past the end take ``fill`` (a number, or a tensor broadcast against ``x``), or repeat
    the last entry when ``fill`` is None."""
    n = x.shape[dim]
    src = torch.arange(n, dtype=torch.float32) * factor
    past = src > n - 1
    src = src.clamp(max=n - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = n
    frac = (src - lo).view(shape).to(x.dtype)
    out = x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac
    if fill is not None and bool(past.any()):
        out = torch.where(past.view(shape), torch.as_tensor(fill, dtype=x.dtype), out)
    return out


def noise_file_list(spec: Any) -> list[Path]:
    """``noise_files`` (a path, a folder of audio files, a glob, or a list of them) as a sorted list of files."""
    from ..modality import get_modality

    exts = set(get_modality("audio").readable_extensions)
    out: list[Path] = []
    for item in [spec] if isinstance(spec, (str, Path)) else list(spec):
        path = Path(str(item)).expanduser()
        if any(c in str(item) for c in "*?["):
            out += sorted(Path(q) for q in glob.glob(str(path), recursive=True) if Path(q).is_file())
        elif path.is_dir():
            out += sorted(q for q in path.rglob("*") if q.is_file() and q.suffix.lower() in exts)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(path, "audio", "modality.audio.augment.noise_files: no such file or folder")
    if not out:
        raise InputError(Path(str(spec)), "audio", f"modality.audio.augment.noise_files matched no audio files "
                                                     f"({sorted(exts)})")
    return out


def generated_noise(mel: int, frames: int, g: torch.Generator) -> torch.Tensor:
    """Natural-log mel power of stationary noise with a random spectral slope (0 = white to -2 = brown, per octave of
    the mel axis), with the cell-to-cell spread of a log-power estimate."""
    slope = _u(g, -2.0, 0.0)
    bands = torch.linspace(0.0, 1.0, mel).unsqueeze(-1)
    return slope * math.log(4.0) * bands + 0.5 * torch.randn((mel, frames), generator=g)


def audio_augment(p: Mapping[str, Any], contract: Mapping[str, Any]) -> Augment:
    std = float(contract.get("std", AUDIO_STD))
    warp, stretch, level = p.get("freq_warp"), p.get("time_stretch"), float(p.get("level_db", 0.0))
    mean = float(contract.get("mean", AUDIO_MEAN))
    floor = (math.log(torch.finfo(torch.float32).eps) - mean) / std  # log(eps): the fbank of digital silence
    padded = -mean / std  # a frame padded with zeros to target_length
    gain, shift = float(p.get("gain_db", 0.0)), float(p.get("time_shift", 0.0))
    fm, fw = int(p.get("freq_masks", 0)), int(p.get("freq_width", 0))
    tm, tw = int(p.get("time_masks", 0)), int(p.get("time_width", 0))
    snr, noise_prob = p.get("noise_snr"), float(p.get("noise_prob", 1.0))
    if snr is not None and (len(snr) != 2 or float(snr[0]) > float(snr[1])):
        raise ValueError(f"modality.audio.augment.noise_snr must be [low_db, high_db], got {snr}")
    noise_paths = noise_file_list(p["noise_files"]) if p.get("noise_files") else []
    bank: dict[int, torch.Tensor] = {}  # noise file index -> its log-mel clips, read on first use in this process

    def recording(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(whole frames padded to the clip's length, cells of the recording above the fbank's floor)."""
        pad = (x - padded).abs().amax(dim=-2, keepdim=True) < 1e-6
        return pad, (x > floor + 1e-4) & ~pad

    def noise_clip(mel: int, frames: int, g: torch.Generator) -> torch.Tensor:
        if not noise_paths:
            return generated_noise(mel, frames, g)
        i = int(torch.randint(len(noise_paths), (), generator=g))
        if i not in bank:
            from ..modality import get_modality

            audio = get_modality("audio")
            clips = audio.make_transform(dict(contract))(audio.read(noise_paths[i]))
            bank[i] = clips.reshape(-1, *clips.shape[-2:]) * std + mean
        clips = bank[i]
        clip = clips[int(torch.randint(clips.shape[0], (), generator=g))]
        if clip.shape[0] != mel:
            raise InputError(noise_paths[i], "audio", f"noise clip has {clip.shape[0]} mel bins, the samples {mel}")
        reps = -(-frames // clip.shape[1])
        return clip.repeat(1, reps).roll(int(torch.randint(clip.shape[1], (), generator=g)), dims=-1)[:, :frames]

    def add_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        mel, frames = x.shape[-2:]
        pad, signal = recording(x)
        log_p = x * std + mean  # natural-log mel power
        if not bool(signal.any()):
            return x
        lead = x.shape[:-2]
        noise = torch.stack([noise_clip(mel, frames, g) for _ in range(max(1, math.prod(lead)))]).view(*lead, mel, frames)
        # log of the ratio of the mean powers over the recording's cells (the cell count cancels)
        ratio = torch.logsumexp(log_p[signal], 0) - torch.logsumexp(noise[signal], 0)
        target = _u(g, float(snr[0]), float(snr[1])) * math.log(10) / 10
        mixed = torch.logaddexp(log_p, noise + (ratio - target))
        return torch.where(pad, x, (mixed - mean) / std)

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = x.clone()
        mel, frames = x.shape[-2:]
        if snr is not None and _u(g) < noise_prob:
            x = add_noise(x, g)
        if level:
            _, signal = recording(x)
            moved = (x + _u(g, -level, level) * math.log(10) / 10 / std).clamp(min=floor)
            x = torch.where(signal, moved, x)
        if warp:  # output bin i reads bin i / a: a > 1 moves the spectrum up
            x = resample_axis(x, x.ndim - 2, 1.0 / _u(g, *warp))
        if stretch:  # output frame j reads frame j * b: b > 1 plays faster
            x = resample_axis(x, x.ndim - 1, _u(g, *stretch), fill=x.amin(dim=-1, keepdim=True))
        if gain:  # power x 10^(dB/10): log energies move by dB * ln(10) / 10, in units of the contract's std
            x += _u(g, -gain, gain) * math.log(10) / 10 / std
        if shift:
            x = x.roll(int(round(_u(g, -shift, shift) * frames)), dims=-1)
        for count, width, size, dim in ((fm, fw, mel, -2), (tm, tw, frames, -1)):
            for _ in range(count if width else 0):
                w = int(torch.randint(min(width, size) + 1, (), generator=g))
                a = int(torch.randint(size - w + 1, (), generator=g))
                x.narrow(dim, a, w).zero_()
        return x

    return fn


# ----------------------------------------------------------------------------------------------- points
def points_augment(p: Mapping[str, Any]) -> Augment:
    rotate, up = bool(p.get("rotate", False)), int(p.get("up_axis", 1))
    scale, jitter, drop = p.get("scale"), float(p.get("jitter", 0.0)), float(p.get("dropout", 0.0))

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        xyz, rest = x[:, :3], x[:, 3:]
        if rotate:
            t = _u(g, 0.0, 2 * math.pi)
            c, s = math.cos(t), math.sin(t)
            a, b = [i for i in range(3) if i != up]
            R = torch.eye(3)
            R[a, a], R[a, b], R[b, a], R[b, b] = c, -s, s, c
            xyz = xyz @ R.T
        if scale:
            xyz = xyz * torch.tensor([_u(g, *scale) for _ in range(3)])
        if jitter:
            xyz = xyz + (torch.randn(xyz.shape, generator=g) * jitter).clamp(-5 * jitter, 5 * jitter)
        out = torch.cat([xyz, rest], dim=1)
        if drop:
            n = int(_u(g, 0.0, drop) * out.shape[0])
            if n:
                idx = torch.randperm(out.shape[0], generator=g)[:n]
                out[idx] = out[0].clone()
        return out.contiguous()

    return fn


# ---------------------------------------------------------------------------------------------- factory
def make_augment(modality: str, params: Mapping[str, Any] | None, contract: Mapping[str, Any] | None = None) -> Augment | None:
    """The augmentation of ``modality`` for ``params`` (None when nothing is configured); unknown keys raise."""
    params = dict(params or {})
    if not params:
        return None
    if modality not in KEYS:
        raise ValueError(f"modality.{modality}.augment: no augmentations exist for {modality!r} "
                         f"(available for {sorted(KEYS)})")
    unknown = sorted(set(params) - KEYS[modality])
    if unknown:
        raise ValueError(f"modality.{modality}.augment: unknown keys {unknown}; known: {sorted(KEYS[modality])}")
    if modality in ("image", "video"):
        return image_augment(params, contract, modality)
    if modality == "audio":
        return audio_augment(params, contract or {})
    return points_augment(params)


def make_augments(specs: Mapping[str, Mapping[str, Any] | None], contracts: Mapping[str, Mapping]) -> dict[str, Augment]:
    out = {}
    for m, p in specs.items():
        fn = make_augment(m, p, contracts.get(m))
        if fn is not None:
            out[m] = fn
    return out
