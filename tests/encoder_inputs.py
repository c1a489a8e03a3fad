"""Synthetic encoder inputs of exactly the shapes the shared input contracts document (no files, no transforms)."""

from __future__ import annotations

import torch

SOT, EOT = 49406, 49407


def text_ids(lengths: list[int], context_length: int = 77, generator: torch.Generator | None = None) -> torch.Tensor:
    """CLIP-style ids: SOT, ``n`` random word ids, EOT (the largest id), zero padding."""
    ids = torch.zeros(len(lengths), context_length, dtype=torch.long)
    for row, n in enumerate(lengths):
        n = min(n, context_length - 2)
        ids[row, 0] = SOT
        ids[row, 1 : n + 1] = torch.randint(1, SOT, (n,), generator=generator)
        ids[row, n + 1] = EOT
    return ids


def sample_shape(modality: str, contract: dict) -> tuple[int, ...]:
    """The per-sample tensor shape a modality's transform produces under ``contract``."""
    c = contract
    if modality == "image":
        return (3, c["image_size"], c["image_size"])
    if modality == "text":
        return (c["context_length"],)
    if modality == "audio":
        return (c["clips"], 1, c["num_mel_bins"], c["target_length"])
    if modality == "video":
        return (c["clips"], 3, c["frames"], c["image_size"], c["image_size"])
    if modality == "points":
        return (c["num_points"], c["channels"])
    if modality in ("depth", "thermal"):  # ImageBind-compatible, already preprocessed
        return (c["channels"], c["image_size"], c["image_size"])
    if modality == "imu":
        return (c["channels"], c["length"])
    raise KeyError(f"no synthetic input for modality {modality!r}")


def synthetic_batch(modality: str, contract: dict, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random batch ``(B, *sample_shape)`` with realistic value ranges for ``modality``."""
    g = torch.Generator().manual_seed(seed)
    if modality == "text":
        lengths = torch.randint(1, 20, (batch,), generator=g).tolist()
        return text_ids(lengths, contract["context_length"], g)
    x = torch.randn((batch, *sample_shape(modality, contract)), generator=g)
    if modality == "points":
        x[..., :3] = x[..., :3] / x[..., :3].norm(dim=-1).amax(dim=-1, keepdim=True)[..., None]  # inside the unit sphere
        x[..., 3:] = x[..., 3:].sigmoid()  # rgb in [0, 1]
    return x
