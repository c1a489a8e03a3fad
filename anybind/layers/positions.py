"""CLS token and learned absolute positions: prepending, initialising and resampling position tables.

Every stem of a ViT-style tower ends the same way: a CLS token goes in front of the patch tokens and a learned
position table ``(1, 1 + patches, width)`` is added. A table trained on one patch grid is resampled to another with
timm's ``resample_abs_pos_embed`` (bicubic over the grid, the CLS row kept).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def add_cls_and_positions(tokens: torch.Tensor, cls_token: torch.Tensor, pos_embed: torch.Tensor, *,
                          match_dtype: bool = True) -> torch.Tensor:
    """``(N, L, C)`` patch tokens -> ``(N, 1 + L, C)``: ``cls_token (1, 1, C)`` prepended, ``pos_embed`` added.

    ``match_dtype`` casts CLS and positions to the tokens' dtype, so that under autocast the token stream stays in
    the reduced precision; without it they stay float32 and promote the stream (ImageBind's stems do that).
    """
    cls = cls_token.expand(tokens.shape[0], -1, -1)
    if match_dtype:
        cls, pos_embed = cls.to(tokens.dtype), pos_embed.to(tokens.dtype)
    return torch.cat([cls, tokens], dim=1) + pos_embed


def init_token_params(*params: torch.Tensor, std: float = 0.02, truncate: bool = True) -> None:
    """Truncated-normal init of CLS / position parameters: cut at two standard deviations (timm's ViT) or, with
    ``truncate=False``, at torch's default of +-2 absolute (ImageBind's init)."""
    for p in params:
        if truncate:
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        else:
            nn.init.trunc_normal_(p, std=std)


def pos_embed_to_grid(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A position table ``(1, [1 +] h*w, C)`` of a square grid -> ``(1, 1 + grid, C)``, resampled when the grids
    differ (a table without a CLS row, timm's ``no_embed_class`` models, gets a zero CLS position).

    Raises ``ValueError`` when the table is not a square patch grid, with or without a CLS row.
    """
    n = pos.shape[1]
    if math.isqrt(n - 1) ** 2 == n - 1:
        side = math.isqrt(n - 1)
    elif math.isqrt(n) ** 2 == n:
        side = math.isqrt(n)
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
    else:
        raise ValueError(f"position table with {n} rows is not a square patch grid (with or without a CLS row)")
    if (side, side) != tuple(grid):
        from timm.layers import resample_abs_pos_embed

        pos = resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=1)
    return pos


def repeat_over_time(pos: torch.Tensor, times: int) -> torch.Tensor:
    """A spatial table ``(1, 1 + h*w, C)`` -> ``(1, 1 + times*h*w, C)`` for time-major tubelet tokens: the CLS row
    once, the spatial rows repeated for every temporal slot."""
    return torch.cat([pos[:, :1], pos[:, 1:].repeat(1, times, 1)], dim=1)


__all__ = ["add_cls_and_positions", "init_token_params", "pos_embed_to_grid", "repeat_over_time"]
