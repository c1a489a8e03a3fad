"""Image encoders: a Vision Transformer, the anchor tower every other modality is bound to.

* ViT: Dosovitskiy et al., "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929
* ImageBind (image-anchored binding): Girdhar et al., https://arxiv.org/abs/2305.05665
* timm's ViT (parameter names and weights this tower can load): https://github.com/huggingface/pytorch-image-models

Design: the stem is :class:`anybind.layers.PatchStem` (conv patch embedding + CLS + learned positions) and the trunk is
:class:`anybind.layers.Transformer`, whose parameter names are already timm's (``blocks.N.norm1``, ``attn.qkv``,
``mlp.fc1``...). That was preferred over wrapping ``timm.models.vision_transformer.VisionTransformer`` because:

* all five towers share one block implementation: the same fused ``scaled_dot_product_attention``, the same
  gradient checkpointing, the same FLOPs estimate, so an image trunk can initialise a video trunk
  (:func:`anybind.layers.inflate_image_stem`) by a plain ``load_state_dict``;
* timm's class fuses stem, trunk and pooling in one ``forward_features`` (dynamic sizes, patch dropout, register
  tokens) while the tower contract needs them apart;
* timm weights still load: :func:`checkpoint_filter_fn` renames keys (timm's final ``norm`` becomes the head's
  norm, because the head owns the last LayerNorm in every anybind tower), resamples the position table and,
  if needed, the patch kernel with timm's own helpers. The tests check the result equals timm's
  ``VisionTransformer`` output.

Builders: :func:`build_image_vit` takes every knob; ``image_vit_{test,tiny,small,base}`` are presets.
"""

from __future__ import annotations

from pathlib import Path

import torch

from anybind.constants import CLIP_MEAN, CLIP_STD
from anybind.errors import CheckpointError
from anybind.layers import EncoderTower, PatchStem, pos_embed_to_grid
from anybind.registry import register_encoder

from ._common import build_tower, load_pretrained


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
            try:
                key, value = "stem.pos_embed", pos_embed_to_grid(value, stem.grid_size)
            except ValueError as exc:
                raise CheckpointError(str(exc)) from None
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
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
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
    stem = PatchStem(width, input_size=(image_size, image_size), patch_size=patch_size, bias=patch_bias,
                     pre_norm=pre_norm, conv_channels=conv_stem)
    contract = {"image_size": image_size, "mean": list(mean), "std": list(std), "interpolation": interpolation}
    tower = build_tower("image", stem, contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                        mlp_ratio=mlp_ratio, drop_path=drop_path, qkv_bias=qkv_bias, layer_scale=layer_scale)
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
