"""Video encoders: a Vision Transformer over space-time tubelets, several clips per video.

* ViViT (tubelet embedding, inflating image weights into it): Arnab et al., https://arxiv.org/abs/2103.15691
* I3D (inflating 2-D kernels to 3-D): Carreira and Zisserman, https://arxiv.org/abs/1705.07750
* ImageBind (5 clips of 2 s, 2 frames each, tubelets of 2 x 14 x 14): https://arxiv.org/abs/2305.05665

Input contract: ``{"image_size", "mean", "std", "frames", "clips", "clip_duration"}``; the transform yields
``(clips, 3, frames, S, S)`` per video, :class:`anybind.layers.EncoderTower` embeds every clip and averages.

Image and video are separate towers. ImageBind treats an image as a 2-frame video through one shared Conv3d stem
and trunk, which ties the two: in anybind the image tower is the frozen anchor every modality is bound to, and a
video tower that shared it could not learn motion without moving the anchor (and every modality already bound to
it). Separate towers let video train while the image anchor stays frozen, and let each pick its own size.
What sharing gave, a good start, :func:`inflate_image_stem` gives instead: it copies a trained image tower into a
video tower with the 2-D patch kernel spread evenly over the tubelet's frames and the spatial positions repeated
over time, so that before any video training a still video embeds exactly like its frame does (exactly with one
tubelet per clip, the default 2 frames; closely with more).
"""

from __future__ import annotations

import torch
from torch import nn

from anybind.layers import EncoderTower, TokenHead, Transformer
from anybind.registry import register_encoder

from ._common import CLIP_MEAN, CLIP_STD, init_weights
from .image import check_conv_stem, pos_embed_to_grid


class ConvTubeletEmbed(nn.Sequential):
    """Early convolutions for clips: the image stem's 3x3 stride-2 convolutions applied to every frame (as Conv3d
    kernels ``(1, 3, 3)``), then one Conv3d ``(t, 1, 1)`` that merges each tubelet's ``t`` frames into ``width``."""

    def __init__(self, width: int, patch_size: int, tubelet: int, channels: list[int] | tuple[int, ...]):
        check_conv_stem(patch_size, channels)
        layers: list[nn.Module] = []
        prev = 3
        for c in channels:
            layers += [nn.Conv3d(prev, c, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False), nn.BatchNorm3d(c),
                       nn.ReLU(inplace=True)]
            prev = c
        super().__init__(*layers, nn.Conv3d(prev, width, (tubelet, 1, 1), (tubelet, 1, 1)))


class TubeletStem(nn.Module):
    """``(N, 3, T, H, W) -> (N, 1 + T/t * H/p * W/p, width)``: Conv3d tubelets ``(t, p, p)``, CLS, positions.

    ``conv_channels`` replaces the tubelet kernel by a :class:`ConvTubeletEmbed` (early convolutions per frame).
    """

    def __init__(
        self,
        width: int,
        *,
        image_size: int = 224,
        frames: int = 2,
        patch_size: int = 16,
        tubelet: int = 2,
        bias: bool = True,
        pre_norm: bool = False,
        conv_channels: list[int] | tuple[int, ...] | None = None,
    ):
        super().__init__()
        if frames % tubelet:
            raise ValueError(f"frames ({frames}) must be a multiple of the tubelet length ({tubelet})")
        self.input_shape = (3, frames, image_size, image_size)
        side = -(-image_size // patch_size) if conv_channels else image_size // patch_size
        self.grid_size = (frames // tubelet, side, side)
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        if conv_channels:
            self.proj = ConvTubeletEmbed(width, patch_size, tubelet, conv_channels)
        else:
            self.proj = nn.Conv3d(3, width, (tubelet, patch_size, patch_size), (tubelet, patch_size, patch_size),
                                  bias=bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, width))
        self.norm_pre = nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity()

    def init_tokens(self, std: float = 0.02) -> None:
        nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        nn.init.trunc_normal_(self.pos_embed, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"TubeletStem expects clips (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}; "
                "the video transform must use this encoder's input contract"
            )
        x = self.proj(x).flatten(2).transpose(1, 2)  # (N, T' * H' * W', width), time-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.norm_pre(x + self.pos_embed.to(x.dtype))


@torch.no_grad()
def inflate_image_stem(video_tower: EncoderTower, image_tower: EncoderTower, *, trunk: bool = True,
                       head: bool = True) -> EncoderTower:
    """Initialise ``video_tower`` from a trained ``image_tower`` (in place; returns it).

    The patch kernel is repeated over the tubelet's ``t`` frames and divided by ``t``, the spatial position table is
    resampled to the video grid if needed and repeated for every temporal slot; CLS, pre-norm, and (when asked and
    the shapes agree) the trunk and head are copied. A clip of ``t`` identical frames then embeds like the image.
    """
    from .image import ConvPatchEmbed

    vs, is_ = video_tower.stem, image_tower.stem
    if isinstance(vs.proj, ConvTubeletEmbed) or isinstance(is_.proj, ConvPatchEmbed):
        _inflate_conv_stem(vs.proj, is_.proj)
    else:
        if vs.proj.out_channels != is_.proj.out_channels:
            raise ValueError(f"video width {vs.proj.out_channels} differs from image width {is_.proj.out_channels}")
        w2d = is_.proj.weight
        t, p = vs.proj.kernel_size[0], vs.proj.kernel_size[1:]
        if tuple(w2d.shape[-2:]) != tuple(p):
            from timm.layers import resample_patch_embed

            w2d = resample_patch_embed(w2d, list(p))
        vs.proj.weight.copy_(w2d.unsqueeze(2).expand(-1, -1, t, -1, -1) / t)
        if vs.proj.bias is not None:
            vs.proj.bias.copy_(is_.proj.bias if is_.proj.bias is not None else torch.zeros_like(vs.proj.bias))
    pos = pos_embed_to_grid(is_.pos_embed, vs.grid_size[1:])
    vs.pos_embed.copy_(torch.cat([pos[:, :1], pos[:, 1:].repeat(1, vs.grid_size[0], 1)], dim=1))
    vs.cls_token.copy_(is_.cls_token)
    if isinstance(vs.norm_pre, nn.LayerNorm) and isinstance(is_.norm_pre, nn.LayerNorm):
        vs.norm_pre.load_state_dict(is_.norm_pre.state_dict())
    if trunk:
        try:
            video_tower.trunk.load_state_dict(image_tower.trunk.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"the image trunk does not fit the video trunk (build both at the same size): {exc}") from exc
    if head and video_tower.head.proj.weight.shape == image_tower.head.proj.weight.shape:
        video_tower.head.load_state_dict(image_tower.head.state_dict())
    return video_tower


def _inflate_conv_stem(video_stem: nn.Module, image_stem: nn.Module) -> None:
    """Per-frame convolutions take the image stem's 2-D kernels; the tubelet merge starts as the mean of its frames."""
    from .image import ConvPatchEmbed

    if not (isinstance(video_stem, ConvTubeletEmbed) and isinstance(image_stem, ConvPatchEmbed)):
        raise ValueError("inflating a convolutional stem needs conv_stem on both towers (the same channel counts)")
    pairs = list(zip(video_stem, image_stem))
    if len(video_stem) != len(image_stem) or any(
            tuple(v.weight.shape[:2]) != tuple(i.weight.shape[:2]) for v, i in pairs if hasattr(v, "weight")):
        raise ValueError("the video and image conv stems differ (build both with the same width and conv_stem)")
    for v, i in pairs[:-1]:
        if isinstance(v, nn.Conv3d):
            v.weight.copy_(i.weight.unsqueeze(2))
        elif isinstance(v, nn.BatchNorm3d):
            v.load_state_dict(i.state_dict())
    last_v, last_i = pairs[-1]
    t = last_v.kernel_size[0]
    last_v.weight.copy_(last_i.weight.unsqueeze(2).expand(-1, -1, t, -1, -1) / t)
    last_v.bias.copy_(last_i.bias)


VIDEO_VIT_SIZES = {
    "test": dict(width=32, depth=1, num_heads=2, embed_dim=32, image_size=32, patch_size=8, clips=2),
    "tiny": dict(width=192, depth=6, num_heads=3, embed_dim=128),
    "small": dict(width=384, depth=12, num_heads=6, embed_dim=384),
    "base": dict(width=768, depth=12, num_heads=12, embed_dim=512),
}


def build_video_vit(
    *,
    width: int,
    depth: int,
    num_heads: int,
    embed_dim: int,
    image_size: int = 224,
    patch_size: int = 16,
    frames: int = 2,
    tubelet: int = 2,
    clips: int = 5,
    clip_duration: float = 2.0,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    qkv_bias: bool = True,
    patch_bias: bool = True,
    pre_norm: bool = False,
    layer_scale: float | None = None,
    mean: list[float] = CLIP_MEAN,
    std: list[float] = CLIP_STD,
    conv_stem: list[int] | None = None,
) -> EncoderTower:
    """A tubelet ViT tower with every knob as an argument (sampling settings become its input contract).

    ``conv_stem`` (one channel count per halving of ``patch_size``) uses early convolutions per frame, like the image
    tower's option of the same name, so a conv-stem image tower inflates into it (:func:`inflate_image_stem`).
    """
    stem = TubeletStem(width, image_size=image_size, frames=frames, patch_size=patch_size, tubelet=tubelet,
                       bias=patch_bias, pre_norm=pre_norm, conv_channels=conv_stem)
    trunk = Transformer(width, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, qkv_bias=qkv_bias,
                        layer_scale=layer_scale, final_norm=False)
    contract = {"image_size": image_size, "mean": list(mean), "std": list(std), "frames": frames, "clips": clips,
                "clip_duration": clip_duration}
    tower = EncoderTower(modality="video", stem=stem, trunk=trunk, head=TokenHead(width, embed_dim, pool="cls"),
                         embed_dim=embed_dim, input_contract=contract, width=width)
    init_weights(tower)
    return tower


@register_encoder("video_vit_test", modality="video")
def video_vit_test(**kwargs) -> EncoderTower:
    """2 clips of 2 frames at 32 px, patch 8, width 32: for unit tests."""
    return build_video_vit(**{**VIDEO_VIT_SIZES["test"], **kwargs})


@register_encoder("video_vit_tiny", modality="video")
def video_vit_tiny(**kwargs) -> EncoderTower:
    """5 clips of 2 frames at 224 px, tubelets 2x16x16, width 192, 6 blocks: the default video tower."""
    return build_video_vit(**{**VIDEO_VIT_SIZES["tiny"], **kwargs})


@register_encoder("video_vit_small", modality="video")
def video_vit_small(**kwargs) -> EncoderTower:
    """5 clips of 2 frames at 224 px, width 384, 12 blocks (inflates from ``image_vit_small``)."""
    return build_video_vit(**{**VIDEO_VIT_SIZES["small"], **kwargs})


@register_encoder("video_vit_base", modality="video")
def video_vit_base(**kwargs) -> EncoderTower:
    """5 clips of 2 frames at 224 px, width 768, 12 blocks (inflates from ``image_vit_base``)."""
    return build_video_vit(**{**VIDEO_VIT_SIZES["base"], **kwargs})
