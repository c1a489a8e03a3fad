"""Image encoders: a Vision Transformer, the anchor tower every other modality is bound to.

* ViT: Dosovitskiy et al., "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929
* ImageBind (image-anchored binding): Girdhar et al., https://arxiv.org/abs/2305.05665
* timm's ViT (parameter names and weights this tower can load): https://github.com/huggingface/pytorch-image-models

Design: the stem is built here (:class:`PatchStem`: conv patch embedding + CLS + learned positions) and the trunk is
:class:`anybind.layers.Transformer`, whose parameter names are already timm's (``blocks.N.norm1``, ``attn.qkv``,
``mlp.fc1``...). That was preferred over wrapping ``timm.models.vision_transformer.VisionTransformer`` because:

* all five towers share one block implementation: the same fused ``scaled_dot_product_attention``, the same
  gradient checkpointing, the same FLOPs estimate, so an image trunk can initialise a video trunk
  (:func:`encoders.video.inflate_image_stem`) by a plain ``load_state_dict``;
* timm's class fuses stem, trunk and pooling in one ``forward_features`` (dynamic sizes, patch dropout, register
  tokens) while the tower contract needs them apart;
* timm weights still load: :func:`checkpoint_filter_fn` renames keys (timm's final ``norm`` becomes the head's
  norm, because the head owns the last LayerNorm in every anybind tower), resamples the position table and,
  if needed, the patch kernel with timm's own helpers. The tests check the result equals timm's
  ``VisionTransformer`` output.

Builders: :func:`build_image_vit` takes every knob; ``image_vit_{test,tiny,small,base}`` are presets.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from anybind.errors import CheckpointError
from anybind.layers import EncoderTower, TokenHead, Transformer
from anybind.registry import register_encoder

from ._common import CLIP_MEAN, CLIP_STD, init_weights, load_pretrained


def check_conv_stem(patch_size: int, channels: list[int] | tuple[int, ...]) -> None:
    """A conv stem halves the side once per channel count, so ``patch_size`` must be 2 ** len(channels)."""
    steps = patch_size.bit_length() - 1
    if patch_size < 2 or 1 << steps != patch_size or len(channels) != steps:
        raise ValueError(f"a convolutional stem needs a power-of-two patch size and one channel count per "
                         f"stride-2 step: patch_size={patch_size} needs {max(steps, 1)} counts, got {list(channels)}")


class ConvPatchEmbed(nn.Sequential):
    """Early convolutions instead of one patchify kernel: ``log2(patch_size)`` 3x3 stride-2 convolutions (each with
    BatchNorm and ReLU, widths ``channels``), then a 1x1 convolution to ``width``. Same token grid as a
    ``patch_size`` patchify stem for a few percent more FLOPs; small ViTs trained from scratch learn shapes and
    positions much sooner with it (Xiao et al., "Early Convolutions Help Transformers See Better", 2021)."""

    def __init__(self, in_chans: int, width: int, patch_size: int, channels: list[int] | tuple[int, ...]):
        check_conv_stem(patch_size, channels)
        layers: list[nn.Module] = []
        prev = in_chans
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            prev = c
        super().__init__(*layers, nn.Conv2d(prev, width, 1))


class PatchStem(nn.Module):
    """``(N, C, H, W) -> (N, 1 + patches, width)``: conv patch embedding, optional LayerNorm, CLS, positions.

    ``stride`` below ``patch_size`` gives overlapping patches (the audio tower's spectrogram patches);
    ``pre_norm`` adds a LayerNorm after the positions (CLIP's ``ln_pre``, timm's ``norm_pre``); ``conv_channels``
    replaces the patchify kernel by a :class:`ConvPatchEmbed` (non-overlapping patches only).
    """

    def __init__(
        self,
        width: int,
        *,
        input_size: tuple[int, int],
        in_chans: int = 3,
        patch_size: int = 16,
        stride: int | None = None,
        bias: bool = True,
        patch_norm: bool = False,
        pre_norm: bool = False,
        conv_channels: list[int] | tuple[int, ...] | None = None,
    ):
        super().__init__()
        stride = stride or patch_size
        if min(input_size) < patch_size:
            raise ValueError(f"input size {input_size} is smaller than the patch size {patch_size}")
        self.input_size = tuple(input_size)
        self.in_chans = in_chans
        if conv_channels:  # each 3x3 stride-2 convolution (padding 1) halves a side, rounding up
            self.grid_size = tuple(-(-s // patch_size) for s in input_size)
        else:
            self.grid_size = tuple((s - patch_size) // stride + 1 for s in input_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if conv_channels:
            if stride != patch_size:
                raise ValueError(f"a convolutional stem makes non-overlapping patches; got stride {stride} for "
                                 f"patch_size {patch_size}")
            self.proj = ConvPatchEmbed(in_chans, width, patch_size, conv_channels)
        else:
            self.proj = nn.Conv2d(in_chans, width, patch_size, stride, bias=bias)
        self.norm = nn.LayerNorm(width, eps=1e-6) if patch_norm else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, width))
        self.norm_pre = nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity()

    def init_tokens(self, std: float = 0.02) -> None:
        nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        nn.init.trunc_normal_(self.pos_embed, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects (N, {self.in_chans}, {self.input_size[0]}, {self.input_size[1]}), "
                f"got {tuple(x.shape)}; the transform must use this encoder's input contract"
            )
        x = self.norm(self.proj(x).flatten(2).transpose(1, 2))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.norm_pre(x + self.pos_embed.to(x.dtype))


def pos_embed_to_grid(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A timm position table ``(1, [1 +] h*w, C)`` -> ``(1, 1 + grid, C)`` (zero CLS position when it had none)."""
    from timm.layers import resample_abs_pos_embed

    n = pos.shape[1]
    if math.isqrt(n - 1) ** 2 == n - 1:
        side = math.isqrt(n - 1)
    elif math.isqrt(n) ** 2 == n:  # no_embed_class models: the CLS token had no position
        side = math.isqrt(n)
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
    else:
        raise CheckpointError(f"position table with {n} rows is not a square patch grid (with or without a CLS row)")
    if (side, side) != tuple(grid):
        pos = resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=1)
    return pos


_TIMM_RENAMES = (
    ("patch_embed.proj.", "stem.proj."),
    ("patch_embed.norm.", "stem.norm."),
    ("norm_pre.", "stem.norm_pre."),
    ("blocks.", "trunk.blocks."),
    ("norm.", "head.norm."),
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], tower: EncoderTower) -> dict[str, torch.Tensor]:
    """Map a timm ``VisionTransformer`` state_dict (e.g. ``vit_small_patch16_224``) onto an image tower.

    The classifier (``head.*``, ``fc_norm.*``) is dropped; the position table is resampled to the tower's grid
    and the patch kernel to its patch size. A state_dict that is already an anybind tower's passes unchanged.
    Keys that have no place in the tower (register tokens, attention pooling) are kept so that loading reports them.
    """
    if any(k.startswith(("stem.", "trunk.")) for k in state_dict):
        return dict(state_dict)
    stem: PatchStem = tower.stem
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "fc_norm.", "head_drop.")):
            continue
        if key == "cls_token":
            key = "stem.cls_token"
        elif key == "pos_embed":
            key, value = "stem.pos_embed", pos_embed_to_grid(value, stem.grid_size)
        elif key == "patch_embed.proj.weight" and value.shape[-2:] != stem.proj.weight.shape[-2:]:
            from timm.layers import resample_patch_embed

            key, value = "stem.proj.weight", resample_patch_embed(value, list(stem.proj.kernel_size))
        else:
            for old, new in _TIMM_RENAMES:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            key = key.replace(".ls1.gamma", ".ls1").replace(".ls2.gamma", ".ls2")
        out[key] = value
    return out


IMAGE_VIT_SIZES = {
    "test": dict(width=32, depth=1, num_heads=2, embed_dim=32, image_size=32, patch_size=8),
    "tiny": dict(width=192, depth=6, num_heads=3, embed_dim=128, image_size=224, patch_size=16),
    "small": dict(width=384, depth=12, num_heads=6, embed_dim=384, image_size=224, patch_size=16),
    "base": dict(width=768, depth=12, num_heads=12, embed_dim=512, image_size=224, patch_size=16),
}


def build_image_vit(
    *,
    width: int,
    depth: int,
    num_heads: int,
    embed_dim: int,
    image_size: int = 224,
    patch_size: int = 16,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    qkv_bias: bool = True,
    patch_bias: bool = True,
    pre_norm: bool = False,
    layer_scale: float | None = None,
    mean: list[float] = CLIP_MEAN,
    std: list[float] = CLIP_STD,
    interpolation: str = "bicubic",
    conv_stem: list[int] | None = None,
    pretrained: str | Path | None = None,
) -> EncoderTower:
    """A ViT image tower with every knob as an argument.

    ``conv_stem`` (channel counts, one per halving of the patch size, e.g. ``[32, 64, 128]`` for patch 8) uses early
    convolutions instead of the patchify kernel: much faster learning for small towers trained from scratch.

    ``pretrained`` is a LOCAL ``.safetensors`` / ``.pth`` file holding a timm ViT (or an anybind image tower) of the
    same width, depth and heads; the projection into the shared space stays freshly initialised.
    """
    stem = PatchStem(width, input_size=(image_size, image_size), patch_size=patch_size, bias=patch_bias, pre_norm=pre_norm,
                     conv_channels=conv_stem)
    trunk = Transformer(width, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, qkv_bias=qkv_bias,
                        layer_scale=layer_scale, final_norm=False)
    contract = {"image_size": image_size, "mean": list(mean), "std": list(std), "interpolation": interpolation}
    tower = EncoderTower(modality="image", stem=stem, trunk=trunk, head=TokenHead(width, embed_dim, pool="cls"),
                         embed_dim=embed_dim, input_contract=contract, width=width)
    init_weights(tower)
    return load_pretrained(tower, pretrained, checkpoint_filter_fn) if pretrained else tower


@register_encoder("image_vit_test", modality="image")
def image_vit_test(**kwargs) -> EncoderTower:
    """32 px, patch 8, width 32, one block: for unit tests."""
    return build_image_vit(**{**IMAGE_VIT_SIZES["test"], **kwargs})


@register_encoder("image_vit_tiny", modality="image")
def image_vit_tiny(**kwargs) -> EncoderTower:
    """ViT-Ti/16 at 224 px (width 192, 6 blocks): the default image anchor."""
    return build_image_vit(**{**IMAGE_VIT_SIZES["tiny"], **kwargs})


@register_encoder("image_vit_small", modality="image")
def image_vit_small(**kwargs) -> EncoderTower:
    """ViT-S/16 at 224 px; loads timm ``vit_small_patch16_224`` weights through ``pretrained=``."""
    return build_image_vit(**{**IMAGE_VIT_SIZES["small"], **kwargs})


@register_encoder("image_vit_base", modality="image")
def image_vit_base(**kwargs) -> EncoderTower:
    """ViT-B/16 at 224 px; loads timm ``vit_base_patch16_224`` weights through ``pretrained=``."""
    return build_image_vit(**{**IMAGE_VIT_SIZES["base"], **kwargs})
