"""anybind_plugin_demo: a third-party package that adds a modality and an encoder to anybind.

* modality ``timeseries``: ``.csv`` files of numbers (one row per time step, one column per channel, optional header
  row) -> float32 ``(length, channels)``, resampled to a fixed length and standardized per channel;
* encoders ``timeseries_mlp_test`` / ``timeseries_mlp_tiny``: flatten -> linear -> residual MLP blocks -> head.

anybind finds it through the ``anybind.encoders`` entry point, and ``anybind-train modality=[image,timeseries]`` finds
its training config (``conf/modality/timeseries.yaml``) through ``anybind.configs`` (see pyproject.toml); nothing in
anybind knows it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import anybind
from anybind.layers import EncoderTower, Mlp, TokenHead

MODALITY = "timeseries"


def read_csv(path: Path) -> torch.Tensor:
    """A numeric CSV file -> float32 ``(T, C)``; a first row that is not numeric is taken as a header."""
    rows = [row for row in csv.reader(path.read_text().splitlines()) if row]

    def numeric(row: list[str]) -> bool:
        try:
            [float(v) for v in row]
            return True
        except ValueError:
            return False

    if rows and not numeric(rows[0]):
        rows = rows[1:]
    if not rows:
        raise anybind.InputError(path, MODALITY, "has no rows of numbers")
    bad = next((i for i, row in enumerate(rows) if not numeric(row) or len(row) != len(rows[0])), None)
    if bad is not None:
        raise anybind.InputError(path, MODALITY, f"data row {bad + 1} is not {len(rows[0])} numbers: {rows[bad]}")
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32)


def timeseries_transform(contract: dict):
    """``(T, C)`` or ``(T,)`` values -> float32 ``(length, channels)``: linear resampling, per-channel standardization."""
    length, channels = contract["length"], contract["channels"]

    def transform(x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != channels or x.shape[0] < 2:
            # a plain ValueError: anybind re-raises it as an InputError naming the file it came from
            raise ValueError(f"expected (T >= 2, {channels}) values, got {tuple(x.shape)}")
        x = F.interpolate(x.T[None], size=length, mode="linear", align_corners=True)[0].T
        return (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)

    return transform


anybind.register_modality(MODALITY, reader=read_csv, transform=timeseries_transform, extensions=(".csv",),
                          default_encoder="timeseries_mlp_tiny", description="numeric CSV series (demo plugin)")


class ResidualMlps(nn.Module):
    """``depth`` pre-norm residual MLP blocks over ``(N, L, width)`` tokens."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.mlps = nn.ModuleList(Mlp(width, 2 * width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return x


def build_timeseries_mlp(*, width: int, depth: int, embed_dim: int, length: int = 32, channels: int = 2) -> EncoderTower:
    stem = nn.Sequential(nn.Flatten(1), nn.Linear(length * channels, width), nn.Unflatten(1, (1, width)))
    return EncoderTower(modality=MODALITY, stem=stem, trunk=ResidualMlps(width, depth), head=TokenHead(width, embed_dim),
                        embed_dim=embed_dim, input_contract={"length": length, "channels": channels}, width=width)


@anybind.register_encoder("timeseries_mlp_test", modality=MODALITY)
def timeseries_mlp_test(**kwargs) -> EncoderTower:
    return build_timeseries_mlp(**{"width": 32, "depth": 1, "embed_dim": 32, **kwargs})


@anybind.register_encoder("timeseries_mlp_tiny", modality=MODALITY)
def timeseries_mlp_tiny(**kwargs) -> EncoderTower:
    return build_timeseries_mlp(**{"width": 192, "depth": 4, "embed_dim": 128, **kwargs})
