"""Training augmentations per modality, applied to the transformed tensors in the loader workers (never at
evaluation, never by ``model.embed``). Every one is off unless configured::

    # conf/modality/audio.yaml (or +modality.audio.augment.gain_db=6 on the command line)
    augment: {gain_db: 6, time_shift: 0.1, freq_masks: 2, freq_width: 12, time_masks: 2, time_width: 20}

* image / video (the last two dims are height x width; a video's frames share one draw):
  ``crop_scale: [0.5, 1.0]`` random-resized crop (area fraction; ``crop_ratio`` aspect range, default 3/4..4/3),
  ``flip: 0.5`` horizontal-flip probability.
* audio (log-mel clips ``(..., mel, frames)`` normalised by the contract's mean / std): ``gain_db: 6`` a random gain
  in [-6, +6] dB (an offset of the log energies), ``time_shift: 0.1`` a circular shift of up to 10% of the frames,
  SpecAugment ``freq_masks`` x ``freq_width`` and ``time_masks`` x ``time_width`` (masked cells take the mean: 0),
  ``freq_warp: [0.88, 1.12]`` a random stretch of the mel axis about its lowest bin (a pitch / vocal-tract-length
  perturbation: a factor of 1.1 moves every band 10% higher on the mel axis; bins warped in from beyond the top repeat
  the top bin), ``time_stretch: [0.85, 1.15]`` a random speed change (a factor of 1.1 plays 10% faster; frames
  beyond the end take each band's quietest level in the clip, its background), ``level_db: 20`` a random recording
  level in [-20, +20] dB applied as a quieter or louder recording would get it: the fbank's floor (digital silence)
  and the frames padded to the clip's length stay as they are, and no cell goes below the floor. ``gain_db`` instead
  moves every cell, floor included.
* points ``(N, 3 | 6)``: ``rotate: true`` a random rotation about the gravity axis (``up_axis``, default 1 = y),
  ``scale: [0.8, 1.25]`` anisotropic scaling, ``jitter: 0.01`` Gaussian noise (clipped at 5 sigma), ``dropout: 0.2``
  the largest fraction of points replaced by the first point (the shape keeps its size).

Each sample's draws come from a generator seeded by the run's seed, the epoch and the sample, so an epoch is
the same on every run and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..constants import AUDIO_MEAN, AUDIO_STD

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

KEYS = {
    "image": {"crop_scale", "crop_ratio", "flip"},
    "video": {"crop_scale", "crop_ratio", "flip"},
    "audio": {"gain_db", "time_shift", "freq_masks", "freq_width", "time_masks", "time_width", "freq_warp",
              "time_stretch", "level_db"},
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


def image_augment(p: Mapping[str, Any]) -> Augment:
    scale, ratio, flip = p.get("crop_scale"), tuple(p.get("crop_ratio") or (3 / 4, 4 / 3)), float(p.get("flip", 0.0))

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if scale:
            x = resized_crop(x, g, tuple(scale), ratio)
        if flip and _u(g) < flip:
            x = x.flip(-1)
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


def audio_augment(p: Mapping[str, Any], contract: Mapping[str, Any]) -> Augment:
    std = float(contract.get("std", AUDIO_STD))
    warp, stretch, level = p.get("freq_warp"), p.get("time_stretch"), float(p.get("level_db", 0.0))
    mean = float(contract.get("mean", AUDIO_MEAN))
    floor = (math.log(torch.finfo(torch.float32).eps) - mean) / std  # log(eps): the fbank of digital silence
    padded = -mean / std  # a frame padded with zeros to target_length
    gain, shift = float(p.get("gain_db", 0.0)), float(p.get("time_shift", 0.0))
    fm, fw = int(p.get("freq_masks", 0)), int(p.get("freq_width", 0))
    tm, tw = int(p.get("time_masks", 0)), int(p.get("time_width", 0))

    def fn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = x.clone()
        mel, frames = x.shape[-2:]
        if level:
            pad = (x - padded).abs().amax(dim=-2, keepdim=True) < 1e-6  # whole padded frames
            signal = (x > floor + 1e-4) & ~pad
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
        return image_augment(params)
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
