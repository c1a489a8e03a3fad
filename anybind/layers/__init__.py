"""Building blocks shared by all encoders."""

from .tower import EncoderProtocol, EncoderTower, TokenHead
from .transformer import Attention, Block, DropPath, Mlp, Transformer

__all__ = ["Attention", "Block", "DropPath", "EncoderProtocol", "EncoderTower", "Mlp", "TokenHead", "Transformer"]
