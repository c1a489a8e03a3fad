"""Stems: the learnable tokenizers in front of a trunk (patches, tubelets, windows of a series), each ending with
a CLS token and learned positions (:mod:`anybind.layers.positions`).

* :class:`PatchStem`: ``(N, C, H, W)`` -> conv patches (optionally overlapping, or early convolutions through
  :class:`ConvPatchEmbed`); images, log-mel spectrograms, depth and thermal maps.
* :class:`TubeletStem`: ``(N, 3, T, H, W)`` clips -> Conv3d tubelets (or :class:`ConvTubeletEmbed`); with
  ``stills`` an image is a clip of repeated frames (ImageBind's vision stem).
* :class:`WindowStem`: ``(N, channels, length)`` series -> non-overlapping windows through a Linear (IMU).
* :func:`inflate_image_stem`: a video tower initialised from a trained image tower (I3D-style kernel inflation:
  Carreira and Zisserman, https://arxiv.org/abs/1705.07750).

Every stem's ``tokens(x)`` gives CLS + tokens + positions and ``forward(x)`` adds the optional pre-trunk LayerNorm
(``norm_pre``); ``init_tokens()`` initialises CLS and positions (the built-in encoders' ``init_weights`` calls it).
"""

from __future__ import annotations

import torch
from torch import nn

from .positions import add_cls_and_positions, init_token_params, pos_embed_to_grid, repeat_over_time


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


class ConvTubeletEmbed(nn.Sequential):
    """Early convolutions for clips: :class:`ConvPatchEmbed`'s 3x3 stride-2 convolutions applied to every frame (as
    Conv3d kernels ``(1, 3, 3)``), then one Conv3d ``(t, 1, 1)`` that merges each tubelet's ``t`` frames into
    ``width``."""

    def __init__(self, width: int, patch_size: int, tubelet: int, channels: list[int] | tuple[int, ...]):
        check_conv_stem(patch_size, channels)
        layers: list[nn.Module] = []
        prev = 3
        for c in channels:
            layers += [nn.Conv3d(prev, c, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False), nn.BatchNorm3d(c),
                       nn.ReLU(inplace=True)]
            prev = c
        super().__init__(*layers, nn.Conv3d(prev, width, (tubelet, 1, 1), (tubelet, 1, 1)))


class _ClsPositionStem(nn.Module):
    """What every stem here shares: CLS and positions, their init, ``tokens`` -> ``norm_pre`` -> ``forward``."""

    def _add_tokens(self, width: int, num_patches: int, pre_norm: bool, match_dtype: bool) -> None:
        self.num_patches, self.match_dtype = num_patches, match_dtype
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, width))
        self.norm_pre = nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity()

    def init_tokens(self, std: float = 0.02, truncate: bool = True) -> None:
        init_token_params(self.cls_token, self.pos_embed, std=std, truncate=truncate)

    def _cls_and_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        return add_cls_and_positions(tokens, self.cls_token, self.pos_embed, match_dtype=self.match_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(self.tokens(x))

    def _shape_error(self, x: torch.Tensor, expected: str, what: str) -> ValueError:
        return ValueError(f"{type(self).__name__} expects {expected}, got {tuple(x.shape)}; the {what} must use this "
                          "encoder's input contract")


class PatchStem(_ClsPositionStem):
    """``(N, C, H, W) -> (N, 1 + patches, width)``: conv patch embedding, optional LayerNorm, CLS, positions.

    ``stride`` below ``patch_size`` gives overlapping patches (spectrogram patches); ``patch_norm`` adds a LayerNorm
    (``norm_eps``) after the patch projection; ``pre_norm`` one after the positions (CLIP's ``ln_pre``, timm's
    ``norm_pre``); ``conv_channels`` replaces the patchify kernel by a :class:`ConvPatchEmbed` (non-overlapping
    patches only). ``match_dtype``: see :func:`anybind.layers.positions.add_cls_and_positions`.
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
        norm_eps: float = 1e-6,
        pre_norm: bool = False,
        conv_channels: list[int] | tuple[int, ...] | None = None,
        match_dtype: bool = True,
    ):
        super().__init__()
        stride = stride or patch_size
        if min(input_size) < patch_size:
            raise ValueError(f"input size {input_size} is smaller than the patch size {patch_size}")
        self.input_size = tuple(input_size)
        self.in_chans = in_chans
        if conv_channels:  # each 3x3 stride-2 convolution (padding 1) halves a side, rounding up
            self.grid_size = tuple(-(-s // patch_size) for s in input_size)
            if stride != patch_size:
                raise ValueError(f"a convolutional stem makes non-overlapping patches; got stride {stride} for "
                                 f"patch_size {patch_size}")
            self.proj = ConvPatchEmbed(in_chans, width, patch_size, conv_channels)
        else:
            self.grid_size = tuple((s - patch_size) // stride + 1 for s in input_size)
            self.proj = nn.Conv2d(in_chans, width, patch_size, stride, bias=bias)
        self.norm = nn.LayerNorm(width, eps=norm_eps) if patch_norm else nn.Identity()
        self._add_tokens(width, self.grid_size[0] * self.grid_size[1], pre_norm, match_dtype)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != self.input_size:
            raise self._shape_error(x, f"(N, {self.in_chans}, {self.input_size[0]}, {self.input_size[1]})", "transform")
        return self._cls_and_positions(self.norm(self.proj(x).flatten(2).transpose(1, 2)))


class TubeletStem(_ClsPositionStem):
    """``(N, 3, T, H, W) -> (N, 1 + T/t * H/p * W/p, width)``: Conv3d tubelets ``(t, p, p)``, CLS, positions.

    ``conv_channels`` replaces the tubelet kernel by a :class:`ConvTubeletEmbed` (early convolutions per frame).
    With ``stills``, ``(N, 3, H, W)`` images and one-frame clips are accepted too, their frame repeated ``frames``
    times (ImageBind embeds an image as a clip of identical frames).
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
        stills: bool = False,
        match_dtype: bool = True,
    ):
        super().__init__()
        if frames % tubelet:
            raise ValueError(f"frames ({frames}) must be a multiple of the tubelet length ({tubelet})")
        self.input_shape = (3, frames, image_size, image_size)
        self.stills = stills
        side = -(-image_size // patch_size) if conv_channels else image_size // patch_size
        self.grid_size = (frames // tubelet, side, side)
        if conv_channels:
            self.proj = ConvTubeletEmbed(width, patch_size, tubelet, conv_channels)
        else:
            kernel = (tubelet, patch_size, patch_size)
            self.proj = nn.Conv3d(3, width, kernel, kernel, bias=bias)
        self._add_tokens(width, self.grid_size[0] * side * side, pre_norm, match_dtype)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.stills and x.ndim == 4:
            x = x.unsqueeze(2)
        if self.stills and x.ndim == 5 and x.shape[2] == 1:
            x = x.expand(-1, -1, self.input_shape[1], -1, -1)
        if x.ndim != 5 or tuple(x.shape[1:]) != self.input_shape:
            c, t, s, _ = self.input_shape
            images = f" or images (N, {c}, {s}, {s})" if self.stills else ""
            raise self._shape_error(x, f"clips (N, {c}, {t}, {s}, {s}){images}", "video transform")
        return self._cls_and_positions(self.proj(x).flatten(2).transpose(1, 2))  # time-major tokens


class WindowStem(_ClsPositionStem):
    """Multichannel series ``(N, channels, length)`` -> windows of ``window`` samples (channel-major features)
    -> Linear + LayerNorm, CLS, positions."""

    def __init__(self, width: int, *, channels: int, length: int, window: int, norm_eps: float = 1e-6,
                 match_dtype: bool = True):
        super().__init__()
        if length % window:
            raise ValueError(f"length {length} is not a multiple of the window {window}")
        self.window, self.input_shape = window, (channels, length)
        self.proj = nn.Linear(channels * window, width, bias=False)
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self._add_tokens(width, length // window, False, match_dtype)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise self._shape_error(x, f"(N, {', '.join(map(str, self.input_shape))})", "transform")
        n, c, _ = x.shape
        w = x.unfold(-1, self.window, self.window).permute(0, 2, 1, 3).reshape(n, -1, c * self.window)
        return self._cls_and_positions(self.norm(self.proj(w)))


@torch.no_grad()
def inflate_image_stem(video_tower: nn.Module, image_tower: nn.Module, *, trunk: bool = True,
                       head: bool = True) -> nn.Module:
    """Initialise ``video_tower`` (a :class:`TubeletStem` tower) from a trained ``image_tower`` (a
    :class:`PatchStem` tower) in place; returns it.

    The patch kernel is repeated over the tubelet's ``t`` frames and divided by ``t``, the spatial position table is
    resampled to the video grid if needed and repeated for every temporal slot; CLS, pre-norm, and (when asked and
    the shapes agree) the trunk and head are copied. A clip of ``t`` identical frames then embeds like the image.
    """
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
    vs.pos_embed.copy_(repeat_over_time(pos_embed_to_grid(is_.pos_embed, vs.grid_size[1:]), vs.grid_size[0]))
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


__all__ = ["ConvPatchEmbed", "ConvTubeletEmbed", "PatchStem", "TubeletStem", "WindowStem", "check_conv_stem",
           "inflate_image_stem"]
