"""Helpers shared by the built-in encoder files: assembling and initialising a tower, loading a local pretrained file.

Kept private (leading underscore): the public building blocks live in :mod:`anybind.layers`; these helpers only
exist so that the encoder files do not each repeat them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from anybind.errors import CheckpointError, torch_load_problem
from anybind.layers import EncoderTower, TokenHead, Transformer


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """ViT-style init: truncated normal for linear/conv/embedding weights, zero biases, unit LayerNorms.

    Then every submodule with an ``init_tokens()`` method (the stems) initialises its CLS and position parameters.
    On the meta device (shapes only, e.g. to count parameters) nothing is initialised.
    """
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if hasattr(m, "init_tokens"):
            m.init_tokens()


def build_tower(modality: str, stem: nn.Module, contract: dict, *, width: int, depth: int, num_heads: int,
                embed_dim: int, pool: str = "cls", mlp_ratio: float = 4.0, drop_path: float = 0.0,
                qkv_bias: bool = True, bias_kv: bool = False, layer_scale: float | None = None,
                causal: bool = False) -> EncoderTower:
    """``stem`` -> a :class:`~anybind.layers.Transformer` without final norm -> a ``pool`` :class:`TokenHead` (which
    holds the last LayerNorm), ViT-initialised by :func:`init_weights`."""
    trunk = Transformer(width, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, causal=causal,
                        qkv_bias=qkv_bias, bias_kv=bias_kv, layer_scale=layer_scale, final_norm=False)
    tower = EncoderTower(modality=modality, stem=stem, trunk=trunk, head=TokenHead(width, embed_dim, pool=pool),
                         embed_dim=embed_dim, input_contract=contract, width=width)
    init_weights(tower)
    return tower


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A LOCAL weights file: ``.safetensors`` (no code runs) or a torch file loaded with ``weights_only=True``.

    Common wrappers (``{"model": ...}``, ``{"state_dict": ...}``) and a DDP ``module.`` prefix are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights {path} do not exist (anybind never downloads weights; give a local file)")
    try:
        if path.suffix == ".safetensors":
            from anybind.io import read_safetensors

            state = read_safetensors(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"pretrained weights {path} could not be read: {torch_load_problem(exc)}") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"pretrained weights {path} do not hold a flat state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(
    tower: nn.Module,
    path: str | Path,
    filter_fn: Callable[[dict, nn.Module], dict],
    *,
    may_miss: tuple[str, ...] = ("head.proj.",),
) -> nn.Module:
    """Load ``path`` into ``tower`` after ``filter_fn`` renamed its keys; loud about anything that does not fit.

    Only parameters whose names start with one of ``may_miss`` may stay at their fresh initialisation (by
    default the projection into the shared space, which a single-modality checkpoint cannot have).
    """
    state = filter_fn(read_state_dict(path), tower)
    own = tower.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs tower {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"pretrained weights {path} do not fit this tower's shapes: {'; '.join(bad[:5])}")
    missing, unexpected = tower.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(may_miss)]
    if missing or unexpected:
        raise CheckpointError(
            f"pretrained weights {path} do not match the {getattr(tower, 'modality', '?')} tower: "
            f"missing {missing[:6]}, unexpected {unexpected[:6]} (check the size and options the tower was built with)"
        )
    return tower
