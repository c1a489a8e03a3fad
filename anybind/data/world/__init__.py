"""A generated world: one object per sample, seen in all five modalities.

Each sample shows one solid with four latent attributes - ``shape`` (cube, sphere, cone, cylinder, torus,
pyramid, prism, star), ``color`` (red, yellow, green, cyan, blue, magenta), ``size`` (small, large) and
``motion`` (left, right, up, down) - rendered as a shaded image with a motion trail, a caption, a synthesized
sound, a short video and a coloured point cloud. Every modality expresses all four attributes, so the label
``color-shape-size-motion`` is the retrieval match key for every pair. See docs/world.md.

    from anybind.data.world import generate_world
    info = generate_world("data/world")          # cached: a second call with the same arguments is instant
    info.manifests["train"]                      # data/world/train.jsonl

Command line: ``python -m anybind.data.world OUT [--n-train N ...]``.
"""

from .attributes import (ATTRIBUTE_NAMES, COLORS, MOTIONS, SHAPES, SIZES, Attributes, all_combinations,
                         label_of)
from .captions import caption, parse_caption
from .generate import SPLITS, VISIBILITY, WORLD_VERSION, WorldInfo, WorldParams, generate_world, shared_attributes

__all__ = [
    "ATTRIBUTE_NAMES", "Attributes", "COLORS", "MOTIONS", "SHAPES", "SIZES", "SPLITS", "VISIBILITY",
    "WORLD_VERSION", "WorldInfo", "WorldParams", "all_combinations", "caption", "generate_world", "label_of",
    "parse_caption", "shared_attributes",
]
