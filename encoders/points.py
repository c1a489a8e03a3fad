"""Point-cloud encoders: farthest-point-sampled groups, a mini-PointNet per group, then a Transformer.

* Point-BERT (grouping + per-group PointNet tokens + Transformer): Yu et al., https://arxiv.org/abs/2111.14819
* Point-MAE (the two-stage mini-PointNet, centre positional embedding): Pang et al., https://arxiv.org/abs/2203.06604
* PointNet: Qi et al., https://arxiv.org/abs/1612.00593
* ULIP (binding point clouds to an image-text space): Xue et al., https://arxiv.org/abs/2212.05171

Input contract: ``{"num_points", "channels", "min_points"}``; the transform yields ``(num_points, channels)``,
xyz normalized to the unit sphere (plus rgb in [0, 1] when ``channels == 6``). Grouping runs in pure PyTorch
(:mod:`anybind.layers.pointops`): no compiled CUDA extension, the same code on CPU and GPU. Normalisation inside the
mini-PointNet is LayerNorm, not BatchNorm, so an embedding never depends on the other clouds in its batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from anybind.layers import EncoderTower
from anybind.layers.pointops import farthest_point_sample, gather_points, knn_group
from anybind.registry import register_encoder

from ._common import build_tower


class MiniPointNet(nn.Module):
    """``groups (B, G, k, C) -> (B, G, width)``: shared MLP, max-pool, global feature beside each point, MLP, max-pool."""

    def __init__(self, in_chans: int, width: int, hidden: Sequence[int] = (128, 256)):
        super().__init__()
        h1, h2 = hidden
        self.first = nn.Sequential(nn.Linear(in_chans, h1), nn.LayerNorm(h1), nn.GELU(), nn.Linear(h1, h2))
        self.second = nn.Sequential(nn.Linear(2 * h2, 2 * h2), nn.LayerNorm(2 * h2), nn.GELU(), nn.Linear(2 * h2, width))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        f = self.first(groups)
        f = torch.cat([f.amax(dim=2, keepdim=True).expand_as(f), f], dim=-1)
        return self.second(f).amax(dim=2)


class FourierPosition(nn.Module):
    """``xyz (..., 3) -> (..., width)``: xyz with sines and cosines of ``2**k * pi * xyz`` (k < ``frequencies``),
    then an MLP.

    A plain MLP on xyz sees an object that fills a fifth of the unit sphere as tiny coordinate differences; the
    Fourier features spread them over wavelengths from 2 down to ``2**(1 - frequencies)`` units, so the arrangement of
    group centres (the object's shape) reaches the trunk at full resolution (Tancik et al.,
    https://arxiv.org/abs/2006.10739). ``frequencies=0`` is the plain MLP on xyz.
    """

    def __init__(self, width: int, frequencies: int = 6, hidden: int = 128):
        super().__init__()
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(int(frequencies)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3 + 6 * int(frequencies), hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if len(self.freqs):
            angles = (xyz.unsqueeze(-1) * self.freqs.to(xyz.dtype)).flatten(-2)
            xyz = torch.cat([xyz, angles.sin(), angles.cos()], dim=-1)
        return self.mlp(xyz)


class PointGroupStem(nn.Module):
    """``(B, N, C) -> (B, 1 + num_groups, width)``: FPS centres, kNN groups, mini-PointNet tokens, centre positions, CLS.

    Each group's xyz is taken relative to its centre (colour, when ``channels == 6``, is kept as is); the centre's
    absolute xyz goes through :class:`FourierPosition` as the token's positional embedding.

    With ``normalize_groups`` (the default) the relative xyz of a cloud's groups is divided by their RMS extent
    over that cloud, so local geometry enters the mini-PointNet at unit scale whatever the density. Without it, a
    group of 8 neighbours in a 1,024-point cloud spans ~0.02 units against colour channels of ~0.5, and a
    per-point LayerNorm (unlike the BatchNorm of Point-MAE) cannot rebalance them: the shape signal drowns. The
    scale is computed per cloud, so an embedding still never depends on the other clouds in its batch.
    """

    def __init__(self, width: int, *, channels: int = 3, num_groups: int = 64, group_size: int = 32,
                 pointnet_dims: Sequence[int] = (128, 256), normalize_groups: bool = True,
                 pos_frequencies: int = 6):
        super().__init__()
        if channels not in (3, 6):
            raise ValueError(f"point channels must be 3 (xyz) or 6 (xyz + rgb), got {channels}")
        self.channels, self.num_groups, self.group_size = channels, num_groups, group_size
        self.normalize_groups = bool(normalize_groups)
        self.pointnet = MiniPointNet(channels, width, pointnet_dims)
        self.pos_embed = FourierPosition(width, pos_frequencies)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))

    def init_tokens(self, std: float = 0.02) -> None:
        nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        nn.init.trunc_normal_(self.cls_pos, std=std, a=-2 * std, b=2 * std)

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` -> centres ``(B, G, 3)`` and groups ``(B, G, k, C)`` with xyz relative to their centre
        (and, with ``normalize_groups``, divided by the cloud's RMS group extent)."""
        xyz = points[..., :3]
        with torch.no_grad():
            centre_idx = farthest_point_sample(xyz.detach(), self.num_groups)
            group_idx = knn_group(xyz.detach(), gather_points(xyz.detach(), centre_idx), self.group_size)
        centres = gather_points(xyz, centre_idx)
        groups = gather_points(points, group_idx)
        rel = groups[..., :3] - centres.unsqueeze(2)
        if self.normalize_groups:
            rms = rel.detach().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            rel = rel / rms.clamp_min(1e-6)
        return centres, torch.cat([rel, groups[..., 3:]], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != self.channels:
            raise ValueError(
                f"PointGroupStem expects clouds (B, N, {self.channels}), got {tuple(points.shape)}; "
                "the points transform must use this encoder's input contract"
            )
        centres, groups = self.group(points)
        tokens = self.pointnet(groups) + self.pos_embed(centres)
        cls = (self.cls_token + self.cls_pos).expand(points.shape[0], -1, -1).to(tokens.dtype)
        return torch.cat([cls, tokens], dim=1)


POINTS_TRANSFORMER_SIZES = {
    "test": dict(width=32, depth=1, num_heads=2, embed_dim=32, num_points=64, num_groups=8, group_size=8,
                 pointnet_dims=(16, 32)),
    "tiny": dict(width=192, depth=6, num_heads=3, embed_dim=128),
    "small": dict(width=384, depth=12, num_heads=6, embed_dim=384),
    "base": dict(width=768, depth=12, num_heads=12, embed_dim=512),
}


def build_points_transformer(
    *,
    width: int,
    depth: int,
    num_heads: int,
    embed_dim: int,
    num_points: int = 1024,
    channels: int = 3,
    num_groups: int = 64,
    group_size: int = 32,
    pointnet_dims: Sequence[int] = (128, 256),
    normalize_groups: bool = True,
    pos_frequencies: int = 6,
    min_points: int = 16,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    layer_scale: float | None = None,
) -> EncoderTower:
    """A point-group Transformer tower with every knob as an argument (sampling settings become its input contract)."""
    if num_groups > num_points:
        raise ValueError(f"num_groups ({num_groups}) cannot exceed num_points ({num_points})")
    stem = PointGroupStem(width, channels=channels, num_groups=num_groups, group_size=group_size,
                          pointnet_dims=pointnet_dims, normalize_groups=normalize_groups,
                          pos_frequencies=pos_frequencies)
    contract = {"num_points": num_points, "channels": channels, "min_points": min_points}
    return build_tower("points", stem, contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                       mlp_ratio=mlp_ratio, drop_path=drop_path, layer_scale=layer_scale)


@register_encoder("points_transformer_test", modality="points")
def points_transformer_test(**kwargs) -> EncoderTower:
    """64 points in 8 groups of 8, width 32: for unit tests."""
    return build_points_transformer(**{**POINTS_TRANSFORMER_SIZES["test"], **kwargs})


@register_encoder("points_transformer_tiny", modality="points")
def points_transformer_tiny(**kwargs) -> EncoderTower:
    """1024 points in 64 groups of 32, width 192, 6 blocks: the default point-cloud tower."""
    return build_points_transformer(**{**POINTS_TRANSFORMER_SIZES["tiny"], **kwargs})


@register_encoder("points_transformer_small", modality="points")
def points_transformer_small(**kwargs) -> EncoderTower:
    """1024 points in 64 groups of 32, width 384, 12 blocks."""
    return build_points_transformer(**{**POINTS_TRANSFORMER_SIZES["small"], **kwargs})


@register_encoder("points_transformer_base", modality="points")
def points_transformer_base(**kwargs) -> EncoderTower:
    """1024 points in 64 groups of 32, width 768, 12 blocks."""
    return build_points_transformer(**{**POINTS_TRANSFORMER_SIZES["base"], **kwargs})
