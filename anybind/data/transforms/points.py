"""Point-cloud transform: ``(N, 3|6)`` points -> float32 ``(num_points, channels)`` on the unit sphere."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ContractError, InputError
from ._common import as_tensor, describe, positive_int, read_contract

__all__ = ["PointCloudTransform", "points_transform"]


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
        from ...layers.pointops import farthest_point_sample, normalize_unit_sphere

        x = as_tensor(raw)
        if not isinstance(x, torch.Tensor):
            raise InputError(source, "points", f"expected a point cloud tensor (N, 3) or (N, 6), got {describe(x)}")
        if x.ndim != 2 or x.shape[1] not in (3, 6):
            raise InputError(source, "points", f"expected a point cloud (N, 3) or (N, 6), got {describe(x)}")
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.int16)):
            raise InputError(source, "points", f"expected numeric points, got {describe(x)}")
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
    """Contract keys: ``num_points``, ``channels`` (3 or 6) (required); ``min_points`` (optional, default 16)."""
    name = "points_transform"
    c = read_contract(contract, name, ("num_points", "channels"), {"min_points": 16})
    channels = c["channels"]
    if channels not in (3, 6) or isinstance(channels, bool):
        raise ContractError(f"{name}: contract key 'channels' must be 3 (xyz) or 6 (xyz + rgb), got {channels!r}")
    return PointCloudTransform(positive_int(c["num_points"], "num_points", name), int(channels),
                               positive_int(c["min_points"], "min_points", name))
