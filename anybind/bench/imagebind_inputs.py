"""The ImageBind-size towers by modality and inputs shaped as ImageBind's preprocessing makes them (shared by
:mod:`anybind.bench.imagebind` and :mod:`anybind.bench.imagebind_ref`)."""

from __future__ import annotations

import torch

HUGE_TOWERS = {"image": "imagebind_vision_huge", "video": "imagebind_video_huge", "text": "imagebind_text_huge",
               "audio": "imagebind_audio_huge", "depth": "imagebind_depth_huge",
               "thermal": "imagebind_thermal_huge", "imu": "imagebind_imu_huge"}


def towers(size: str = "huge") -> dict[str, str]:
    """Modality -> registry name of the ImageBind-compatible tower at ``size`` (``huge``, or ``test`` for tests)."""
    return {m: name.replace("_huge", f"_{size}") for m, name in HUGE_TOWERS.items()}


def sample_input(modality: str, contract: dict, batch: int) -> torch.Tensor:
    """A batch shaped like ImageBind's preprocessed inputs for ``modality``."""
    g = torch.Generator().manual_seed(0)
    if modality == "text":
        ids = torch.randint(1, 49406, (batch, contract["context_length"]), generator=g)
        ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 0
        return ids
    size = contract.get("image_size")
    shapes = {"image": (3, size, size), "depth": (1, size, size), "thermal": (1, size, size),
              "video": (contract.get("clips", 5) * contract.get("spatial_crops", 1), 3, contract.get("frames", 2),
                        size, size),
              "audio": (contract.get("clips", 3), 1, contract.get("num_mel_bins", 128),
                        contract.get("target_length", 204)),
              "imu": (contract.get("channels", 6), contract.get("length", 2000))}
    return torch.randn((batch, *shapes[modality]), generator=g)
