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

from anybind.layers import EncoderTower, TokenHead, Transformer
from anybind.layers.pointops import farthest_point_sample, gather_points, knn_group
from anybind.registry import register_encoder

from ._common import init_weights


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


class PointGroupStem(nn.Module):
    """``(B, N, C) -> (B, 1 + num_groups, width)``: FPS centres, kNN groups, mini-PointNet tokens, centre positions, CLS.

    Each group's xyz is taken relative to its centre (colour, when ``channels == 6``, is kept as is); the centre's
    absolute xyz goes through a small MLP as the token's positional embedding.
    """

    def __init__(self, width: int, *, channels: int = 3, num_groups: int = 64, group_size: int = 32,
                 pointnet_dims: Sequence[int] = (128, 256)):
        super().__init__()
        if channels not in (3, 6):
            raise ValueError(f"point channels must be 3 (xyz) or 6 (xyz + rgb), got {channels}")
        self.channels, self.num_groups, self.group_size = channels, num_groups, group_size
        self.pointnet = MiniPointNet(channels, width, pointnet_dims)
        self.pos_mlp = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))

    def init_tokens(self, std: float = 0.02) -> None:
        nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        nn.init.trunc_normal_(self.cls_pos, std=std, a=-2 * std, b=2 * std)

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` -> centres ``(B, G, 3)`` and groups ``(B, G, k, C)`` with xyz relative to their centre."""
        xyz = points[..., :3]
        with torch.no_grad():
            centre_idx = farthest_point_sample(xyz.detach(), self.num_groups)
            group_idx = knn_group(xyz.detach(), gather_points(xyz.detach(), centre_idx), self.group_size)
        centres = gather_points(xyz, centre_idx)
        groups = gather_points(points, group_idx)
        rel = groups[..., :3] - centres.unsqueeze(2)
        return centres, torch.cat([rel, groups[..., 3:]], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != self.channels:
            raise ValueError(
                f"PointGroupStem expects clouds (B, N, {self.channels}), got {tuple(points.shape)}; "
                "the points transform must use this encoder's input contract"
            )
        centres, groups = self.group(points)
        tokens = self.pointnet(groups) + self.pos_mlp(centres)
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
    min_points: int = 16,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    layer_scale: float | None = None,
) -> EncoderTower:
    """A point-group Transformer tower with every knob as an argument (sampling settings become its input contract)."""
    if num_groups > num_points:
        raise ValueError(f"num_groups ({num_groups}) cannot exceed num_points ({num_points})")
    stem = PointGroupStem(width, channels=channels, num_groups=num_groups, group_size=group_size,
                          pointnet_dims=pointnet_dims)
    trunk = Transformer(width, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, layer_scale=layer_scale,
                        final_norm=False)
    contract = {"num_points": num_points, "channels": channels, "min_points": min_points}
    tower = EncoderTower(modality="points", stem=stem, trunk=trunk, head=TokenHead(width, embed_dim, pool="cls"),
                         embed_dim=embed_dim, input_contract=contract, width=width)
    init_weights(tower)
    return tower


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
