"""Building blocks shared by all encoders: stems, positions, transformer blocks, the pooled head and the tower."""

from .positions import add_cls_and_positions, init_token_params, pos_embed_to_grid, repeat_over_time
from .stems import (ConvPatchEmbed, ConvTubeletEmbed, PatchStem, TubeletStem, WindowStem, check_conv_stem,
                    inflate_image_stem)
from .tower import EncoderProtocol, EncoderTower, TokenHead
from .transformer import Attention, Block, DropPath, Mlp, Transformer

__all__ = [
    "Attention", "Block", "ConvPatchEmbed", "ConvTubeletEmbed", "DropPath", "EncoderProtocol", "EncoderTower", "Mlp",
    "PatchStem", "TokenHead", "Transformer", "TubeletStem", "WindowStem", "add_cls_and_positions",
    "check_conv_stem", "inflate_image_stem", "init_token_params", "pos_embed_to_grid", "repeat_over_time",
]
