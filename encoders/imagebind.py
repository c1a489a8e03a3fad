"""ImageBind-architecture towers (Girdhar et al., "ImageBind: One Embedding Space To Bind Them All", CVPR 2023,
https://arxiv.org/abs/2305.05665), built from anybind's shared layers.

Every tower is an :class:`anybind.EncoderTower` (stem -> trunk -> head) whose parameters map one-to-one onto the
released checkpoint (see :mod:`anybind.compat.imagebind` for the key mapping and the loader). Stems come from
:mod:`anybind.layers.stems` (``tokens(x)`` is a stem's output before ``norm_pre``), heads are
:class:`anybind.layers.TokenHead`.

* ``image``/``video``: a 2-frame tubelet Conv3d (images are repeated to 2 frames), CLS token, learned positions,
  a LayerNorm before the trunk; ``video`` is the same network over ``(clips, 3, frames, H, W)`` samples.
* ``text``: token embedding + positions, a causal trunk, the end-of-text token (``argmax(ids)``) pooled.
* ``audio``: 128-bin log-mel clips cut into overlapping 16x16 patches (stride 10) + LayerNorm.
* ``depth``/``thermal``: one-channel 16x16 patches + LayerNorm.
* ``imu``: 6 channels x 2000 samples cut into windows of 8 samples, a linear projection + LayerNorm.

Trunks are pre-norm transformers (LayerNorm eps 1e-6, MLP ratio 4, exact GELU) without a final norm (the head
normalizes); audio, depth, thermal and imu attend to one extra learnable key/value token (``bias_kv``).
Heads are pooled token -> LayerNorm -> bias-free Linear. Towers with a logit scale (all but image/video) carry it as
a ``log_logit_scale`` buffer: anybind's ``forward`` returns unit vectors, ImageBind's outputs multiply them by
``min(exp(log_logit_scale), 100)`` (:meth:`anybind.compat.imagebind.ImageBindModel.forward_imagebind`).

Builders take every size as a keyword (defaults: the released "huge" model); ``*_huge`` presets name those sizes
and ``*_test`` presets are tiny, for fast tests.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anybind.constants import AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD
from anybind.layers import EncoderTower, PatchStem, TokenHead, Transformer, TubeletStem, WindowStem
from anybind.registry import register_encoder

# Sizes of the released imagebind_huge checkpoint (heads are not stored in it).
HUGE = {
    "vision": dict(width=1280, depth=32, num_heads=16),
    "text": dict(width=1024, depth=24, num_heads=16),
    "audio": dict(width=768, depth=12, num_heads=12, drop_path=0.1),
    "depth": dict(width=384, depth=12, num_heads=8),
    "thermal": dict(width=768, depth=12, num_heads=12),
    "imu": dict(width=512, depth=6, num_heads=8, drop_path=0.7),
}
HUGE_EMBED_DIM = 1024
# Initial logit scales of the released model (the checkpoint stores the trained values).
LOGIT_SCALE_INIT = {"text": math.log(1 / 0.07), "audio": math.log(20.0), "depth": math.log(5.0),
                    "thermal": math.log(10.0), "imu": math.log(5.0)}


def _initialised(stem: nn.Module) -> nn.Module:
    """``stem`` with ImageBind's CLS / position init (normal, std 0.02, cut at +-2), drawn as soon as it is built.
    ImageBind's stems keep CLS and positions in float32 under autocast (``match_dtype=False``)."""
    stem.init_tokens(truncate=False)
    return stem


class TokenStem(nn.Module):
    """Token ids ``(N, context_length)`` -> embeddings + positions (no CLS: the head pools end-of-text).

    ``forward`` keeps only the positions up to the batch's last end-of-text token (``argmax(ids)``): the trunk is
    causal and the head pools at EOT, so nothing after it can change the embedding, and a caption of 20 tokens costs
    20 positions instead of 77. ``tokens`` gives all ``context_length`` positions (the layout of ImageBind's stem).
    """

    def __init__(self, width: int, *, vocab_size: int, context_length: int, trim_after_eot: bool = True):
        super().__init__()
        self.trim_after_eot = trim_after_eot
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"TokenStem expects (N, {self.pos_embed.shape[1]}) token ids, got {tuple(x.shape)}; the "
                             "text transform must use this encoder's input contract")
        return self.token_embedding(x) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.trim_after_eot or x.ndim != 2 or x.shape[1] != self.pos_embed.shape[1]:
            return self.tokens(x)  # (tokens raises the shape error)
        length = int(x.argmax(dim=-1).max()) + 1
        return self.token_embedding(x[:, :length]) + self.pos_embed[:, :length]


def _tower(modality: str, stem: nn.Module, *, width: int, depth: int, num_heads: int, embed_dim: int,
           mlp_ratio: float, drop_path: float, bias_kv: bool, causal: bool, head: nn.Module,
           input_contract: dict, logit_scale: float | None) -> EncoderTower:
    trunk = Transformer(width, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, causal=causal,
                        bias_kv=bias_kv, final_norm=False)
    for blk in trunk.blocks:
        if blk.attn.bias_k is not None:
            nn.init.normal_(blk.attn.bias_k, std=0.02)
            nn.init.normal_(blk.attn.bias_v, std=0.02)
    tower = EncoderTower(modality=modality, stem=stem, trunk=trunk, head=head, embed_dim=embed_dim,
                         input_contract=input_contract, width=width)
    scale = None if logit_scale is None else torch.tensor(float(logit_scale))
    tower.register_buffer("log_logit_scale", scale)  # ImageBind's output scale; unused by anybind's forward
    return tower


def _patches(width: int, input_size: tuple[int, int], kernel_size: int, stride: int) -> PatchStem:
    """One-channel maps (log-mel clips, depth, thermal) -> conv patches + LayerNorm, CLS, positions."""
    return _initialised(PatchStem(width, input_size=input_size, in_chans=1, patch_size=kernel_size, stride=stride,
                                  bias=False, patch_norm=True, norm_eps=1e-5, match_dtype=False))


def _image_contract(image_size: int) -> dict:
    return {"image_size": image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic",
            "compat": "imagebind"}


# --------------------------------------------------------------------------------------------- builders
def _vision(modality: str, contract: dict, *, width, depth, num_heads, embed_dim, image_size, patch_size, frames,
            tubelet, mlp_ratio, drop_path, pre_norm) -> EncoderTower:
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch {patch_size}")
    stem = _initialised(TubeletStem(width, image_size=image_size, patch_size=patch_size, frames=frames,
                                    tubelet=tubelet, bias=False, pre_norm=pre_norm, stills=True, match_dtype=False))
    return _tower(modality, stem, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                  mlp_ratio=mlp_ratio, drop_path=drop_path, bias_kv=False, causal=False,
                  head=TokenHead(width, embed_dim), input_contract=contract, logit_scale=None)


@register_encoder("imagebind_vision", modality="image", tags=("imagebind",))
def imagebind_vision(*, width: int = 1280, depth: int = 32, num_heads: int = 16, embed_dim: int = HUGE_EMBED_DIM,
                     image_size: int = 224, patch_size: int = 14, frames: int = 2, tubelet: int = 2,
                     mlp_ratio: float = 4.0, drop_path: float = 0.0, pre_norm: bool = True) -> EncoderTower:
    """ImageBind's vision tower on still images (each image is a clip of ``frames`` identical frames)."""
    return _vision("image", _image_contract(image_size), width=width, depth=depth, num_heads=num_heads,
                   embed_dim=embed_dim, image_size=image_size, patch_size=patch_size, frames=frames, tubelet=tubelet,
                   mlp_ratio=mlp_ratio, drop_path=drop_path, pre_norm=pre_norm)


@register_encoder("imagebind_video", modality="video", tags=("imagebind",))
def imagebind_video(*, width: int = 1280, depth: int = 32, num_heads: int = 16, embed_dim: int = HUGE_EMBED_DIM,
                    image_size: int = 224, patch_size: int = 14, frames: int = 2, tubelet: int = 2,
                    mlp_ratio: float = 4.0, drop_path: float = 0.0, pre_norm: bool = True, clips: int = 5,
                    clip_duration: float = 2.0, spatial_crops: int = 3) -> EncoderTower:
    """The vision tower on videos: ``clips`` x ``spatial_crops`` clips of ``frames`` frames, averaged."""
    contract = {**_image_contract(image_size), "frames": frames, "clips": clips, "clip_duration": clip_duration,
                "spatial_crops": spatial_crops}
    return _vision("video", contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                   image_size=image_size, patch_size=patch_size, frames=frames, tubelet=tubelet,
                   mlp_ratio=mlp_ratio, drop_path=drop_path, pre_norm=pre_norm)


@register_encoder("imagebind_text", modality="text", tags=("imagebind",))
def imagebind_text(*, width: int = 1024, depth: int = 24, num_heads: int = 16, embed_dim: int = HUGE_EMBED_DIM,
                   vocab_size: int = 49408, context_length: int = 77, mlp_ratio: float = 4.0,
                   drop_path: float = 0.0, logit_scale: float = LOGIT_SCALE_INIT["text"]) -> EncoderTower:
    """ImageBind's causal text transformer over CLIP BPE ids, pooled at the end-of-text token."""
    contract = {"context_length": context_length, "tokenizer": "clip_bpe", "compat": "imagebind"}
    return _tower("text", TokenStem(width, vocab_size=vocab_size, context_length=context_length), width=width,
                  depth=depth, num_heads=num_heads, embed_dim=embed_dim, mlp_ratio=mlp_ratio, drop_path=drop_path,
                  bias_kv=False, causal=True, head=TokenHead(width, embed_dim, pool="eot"), input_contract=contract,
                  logit_scale=logit_scale)


@register_encoder("imagebind_audio", modality="audio", tags=("imagebind",))
def imagebind_audio(*, width: int = 768, depth: int = 12, num_heads: int = 12, embed_dim: int = HUGE_EMBED_DIM,
                    num_mel_bins: int = 128, target_length: int = 204, kernel_size: int = 16, stride: int = 10,
                    sample_rate: int = 16000, clip_duration: float = 2.0, clips: int = 3, mlp_ratio: float = 4.0,
                    drop_path: float = 0.1, logit_scale: float = LOGIT_SCALE_INIT["audio"]) -> EncoderTower:
    """ImageBind's audio tower over ``clips`` log-mel clips of ``num_mel_bins`` x ``target_length`` frames."""
    contract = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "target_length": target_length,
                "clip_duration": clip_duration, "clips": clips, "mean": AUDIO_MEAN, "std": AUDIO_STD,
                "compat": "imagebind"}
    stem = _patches(width, (num_mel_bins, target_length), kernel_size, stride)
    return _tower("audio", stem, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                  mlp_ratio=mlp_ratio, drop_path=drop_path, bias_kv=True, causal=False,
                  head=TokenHead(width, embed_dim), input_contract=contract, logit_scale=logit_scale)


def _map_tower(modality: str, *, width, depth, num_heads, embed_dim, image_size, kernel_size, mlp_ratio, drop_path,
               logit_scale) -> EncoderTower:
    contract = {"image_size": image_size, "channels": 1, "compat": "imagebind"}
    stem = _patches(width, (image_size, image_size), kernel_size, kernel_size)
    return _tower(modality, stem, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                  mlp_ratio=mlp_ratio, drop_path=drop_path, bias_kv=True, causal=False,
                  head=TokenHead(width, embed_dim), input_contract=contract, logit_scale=logit_scale)


@register_encoder("imagebind_depth", modality="depth", tags=("imagebind",))
def imagebind_depth(*, width: int = 384, depth: int = 12, num_heads: int = 8, embed_dim: int = HUGE_EMBED_DIM,
                    image_size: int = 224, kernel_size: int = 16, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                    logit_scale: float = LOGIT_SCALE_INIT["depth"]) -> EncoderTower:
    """ImageBind's depth tower over ``(1, image_size, image_size)`` disparity maps."""
    return _map_tower("depth", width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                      image_size=image_size, kernel_size=kernel_size, mlp_ratio=mlp_ratio, drop_path=drop_path,
                      logit_scale=logit_scale)


@register_encoder("imagebind_thermal", modality="thermal", tags=("imagebind",))
def imagebind_thermal(*, width: int = 768, depth: int = 12, num_heads: int = 12, embed_dim: int = HUGE_EMBED_DIM,
                      image_size: int = 224, kernel_size: int = 16, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                      logit_scale: float = LOGIT_SCALE_INIT["thermal"]) -> EncoderTower:
    """ImageBind's thermal tower over ``(1, image_size, image_size)`` thermal images."""
    return _map_tower("thermal", width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                      image_size=image_size, kernel_size=kernel_size, mlp_ratio=mlp_ratio, drop_path=drop_path,
                      logit_scale=logit_scale)


@register_encoder("imagebind_imu", modality="imu", tags=("imagebind",))
def imagebind_imu(*, width: int = 512, depth: int = 6, num_heads: int = 8, embed_dim: int = HUGE_EMBED_DIM,
                  channels: int = 6, length: int = 2000, window: int = 8, mlp_ratio: float = 4.0,
                  drop_path: float = 0.7, head_dropout: float = 0.5,
                  logit_scale: float = LOGIT_SCALE_INIT["imu"]) -> EncoderTower:
    """ImageBind's IMU tower over ``(channels, length)`` accelerometer + gyroscope series."""
    contract = {"channels": channels, "length": length, "compat": "imagebind"}
    stem = _initialised(WindowStem(width, channels=channels, length=length, window=window, norm_eps=1e-5,
                                   match_dtype=False))
    return _tower("imu", stem, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                  mlp_ratio=mlp_ratio, drop_path=drop_path, bias_kv=True, causal=False,
                  head=TokenHead(width, embed_dim, dropout=head_dropout), input_contract=contract,
                  logit_scale=logit_scale)


# --------------------------------------------------------------------------------------------- presets
@register_encoder("imagebind_vision_huge", modality="image", tags=("imagebind", "huge"))
def imagebind_vision_huge(**kw) -> EncoderTower:
    return imagebind_vision(**{**HUGE["vision"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_video_huge", modality="video", tags=("imagebind", "huge"))
def imagebind_video_huge(**kw) -> EncoderTower:
    return imagebind_video(**{**HUGE["vision"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_text_huge", modality="text", tags=("imagebind", "huge"))
def imagebind_text_huge(**kw) -> EncoderTower:
    return imagebind_text(**{**HUGE["text"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_audio_huge", modality="audio", tags=("imagebind", "huge"))
def imagebind_audio_huge(**kw) -> EncoderTower:
    return imagebind_audio(**{**HUGE["audio"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_depth_huge", modality="depth", tags=("imagebind", "huge"))
def imagebind_depth_huge(**kw) -> EncoderTower:
    return imagebind_depth(**{**HUGE["depth"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_thermal_huge", modality="thermal", tags=("imagebind", "huge"))
def imagebind_thermal_huge(**kw) -> EncoderTower:
    return imagebind_thermal(**{**HUGE["thermal"], "embed_dim": HUGE_EMBED_DIM, **kw})


@register_encoder("imagebind_imu_huge", modality="imu", tags=("imagebind", "huge"))
def imagebind_imu_huge(**kw) -> EncoderTower:
    return imagebind_imu(**{**HUGE["imu"], "embed_dim": HUGE_EMBED_DIM, **kw})


# Tiny sizes for tests: 32 wide, one block, small inputs.
_TEST = dict(width=32, depth=1, num_heads=2, embed_dim=32)


@register_encoder("imagebind_vision_test", modality="image", tags=("imagebind", "test"))
def imagebind_vision_test(**kw) -> EncoderTower:
    return imagebind_vision(**{**_TEST, "image_size": 28, **kw})


@register_encoder("imagebind_video_test", modality="video", tags=("imagebind", "test"))
def imagebind_video_test(**kw) -> EncoderTower:
    return imagebind_video(**{**_TEST, "image_size": 28, "clips": 2, "spatial_crops": 1, **kw})


@register_encoder("imagebind_text_test", modality="text", tags=("imagebind", "test"))
def imagebind_text_test(**kw) -> EncoderTower:
    return imagebind_text(**{**_TEST, **kw})


@register_encoder("imagebind_audio_test", modality="audio", tags=("imagebind", "test"))
def imagebind_audio_test(**kw) -> EncoderTower:
    return imagebind_audio(**{**_TEST, "num_mel_bins": 32, "target_length": 48, "clips": 1, "clip_duration": 0.5,
                              **kw})


@register_encoder("imagebind_depth_test", modality="depth", tags=("imagebind", "test"))
def imagebind_depth_test(**kw) -> EncoderTower:
    return imagebind_depth(**{**_TEST, "image_size": 32, **kw})


@register_encoder("imagebind_thermal_test", modality="thermal", tags=("imagebind", "test"))
def imagebind_thermal_test(**kw) -> EncoderTower:
    return imagebind_thermal(**{**_TEST, "image_size": 32, **kw})


@register_encoder("imagebind_imu_test", modality="imu", tags=("imagebind", "test"))
def imagebind_imu_test(**kw) -> EncoderTower:
    return imagebind_imu(**{**_TEST, "length": 64, **kw})
