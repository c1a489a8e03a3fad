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
What sharing gave, a good start, :func:`anybind.layers.inflate_image_stem` (importable from here too) gives instead:
it copies a trained image tower into a video tower with the 2-D patch kernel spread evenly over the tubelet's frames
and the spatial positions repeated over time, so that before any video training a still video embeds exactly like
its frame does (exactly with one tubelet per clip, the default 2 frames; closely with more).
"""

from __future__ import annotations

from anybind.constants import CLIP_MEAN, CLIP_STD
from anybind.layers import EncoderTower, TubeletStem
from anybind.layers import inflate_image_stem  # noqa: F401 - also offered here, beside the video builders
from anybind.registry import register_encoder

from ._common import build_tower


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
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    conv_stem: list[int] | None = None,
) -> EncoderTower:
    """A tubelet ViT tower with every knob as an argument (sampling settings become its input contract).

    ``conv_stem`` (one channel count per halving of ``patch_size``) uses early convolutions per frame, like the image
    tower's option of the same name, so a conv-stem image tower inflates into it (:func:`inflate_image_stem`).
    """
    stem = TubeletStem(width, image_size=image_size, frames=frames, patch_size=patch_size, tubelet=tubelet,
                       bias=patch_bias, pre_norm=pre_norm, conv_channels=conv_stem)
    contract = {"image_size": image_size, "mean": list(mean), "std": list(std), "frames": frames, "clips": clips,
                "clip_duration": clip_duration}
    return build_tower("video", stem, contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                       mlp_ratio=mlp_ratio, drop_path=drop_path, qkv_bias=qkv_bias, layer_scale=layer_scale)


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
