"""Audio encoders: a Vision Transformer over log-mel spectrogram patches, several clips per file.

* AST, the Audio Spectrogram Transformer (overlapping 16x16 patches, stride 10): Gong et al.,
  https://arxiv.org/abs/2104.01778
* ImageBind (128-bin kaldi fbank, 2 s clips, 204 frames, 3 clips per file): https://arxiv.org/abs/2305.05665

Input contract: ``{"sample_rate", "num_mel_bins", "target_length", "clip_duration", "clips", "mean", "std"}``; the
transform yields ``(clips, 1, num_mel_bins, target_length)`` per file and :class:`anybind.layers.EncoderTower` embeds
every clip, then averages the unit vectors. The stem is :class:`anybind.layers.PatchStem` (as in the image tower) on one
channel, with overlapping patches (``stride`` < 16) and a LayerNorm after the patch projection. The default spectrogram
statistics are ImageBind's (:data:`anybind.constants.AUDIO_MEAN`, :data:`~anybind.constants.AUDIO_STD`).
"""

from __future__ import annotations

from anybind.constants import AUDIO_MEAN, AUDIO_STD
from anybind.layers import EncoderTower, PatchStem
from anybind.registry import register_encoder

from ._common import build_tower

AUDIO_VIT_SIZES = {
    "test": dict(width=32, depth=1, num_heads=2, embed_dim=32, num_mel_bins=32, target_length=48, clips=1,
                 clip_duration=0.5),
    "tiny": dict(width=192, depth=6, num_heads=3, embed_dim=128, drop_path=0.1),
    "small": dict(width=384, depth=12, num_heads=6, embed_dim=384, drop_path=0.1),
    "base": dict(width=768, depth=12, num_heads=12, embed_dim=512, drop_path=0.1),
}


def build_audio_vit(
    *,
    width: int,
    depth: int,
    num_heads: int,
    embed_dim: int,
    num_mel_bins: int = 128,
    target_length: int = 204,
    patch_size: int = 16,
    stride: int = 10,
    clips: int = 3,
    clip_duration: float = 2.0,
    sample_rate: int = 16000,
    mean: float = AUDIO_MEAN,
    std: float = AUDIO_STD,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    bias_kv: bool = False,
    layer_scale: float | None = None,
    conv_stem: list[int] | None = None,
) -> EncoderTower:
    """A spectrogram ViT tower with every knob as an argument (the spectrogram settings become its input contract).

    ``target_length`` is the number of 10 ms frames per clip: about ``100 * clip_duration`` (204 for 2 s).
    ``conv_stem`` (one channel count per halving of ``patch_size``) replaces the overlapping patch kernel by early
    convolutions over the spectrogram (``stride`` is then ``patch_size``); see :class:`anybind.layers.ConvPatchEmbed`.
    """
    stem = PatchStem(width, input_size=(num_mel_bins, target_length), in_chans=1, patch_size=patch_size,
                     stride=patch_size if conv_stem else stride, bias=False, patch_norm=True, conv_channels=conv_stem)
    contract = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "target_length": target_length,
                "clip_duration": clip_duration, "clips": clips, "mean": mean, "std": std}
    return build_tower("audio", stem, contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                       mlp_ratio=mlp_ratio, drop_path=drop_path, bias_kv=bias_kv, layer_scale=layer_scale)


@register_encoder("audio_vit_test", modality="audio")
def audio_vit_test(**kwargs) -> EncoderTower:
    """32 mel bins x 48 frames, one 0.5 s clip, width 32: for unit tests."""
    return build_audio_vit(**{**AUDIO_VIT_SIZES["test"], **kwargs})


@register_encoder("audio_vit_tiny", modality="audio")
def audio_vit_tiny(**kwargs) -> EncoderTower:
    """128 mel bins x 204 frames, 3 clips of 2 s, width 192, 6 blocks: the default audio tower."""
    return build_audio_vit(**{**AUDIO_VIT_SIZES["tiny"], **kwargs})


@register_encoder("audio_vit_small", modality="audio")
def audio_vit_small(**kwargs) -> EncoderTower:
    """128 mel bins x 204 frames, 3 clips of 2 s, width 384, 12 blocks."""
    return build_audio_vit(**{**AUDIO_VIT_SIZES["small"], **kwargs})


@register_encoder("audio_vit_base", modality="audio")
def audio_vit_base(**kwargs) -> EncoderTower:
    """128 mel bins x 204 frames, 3 clips of 2 s, width 768, 12 blocks."""
    return build_audio_vit(**{**AUDIO_VIT_SIZES["base"], **kwargs})
