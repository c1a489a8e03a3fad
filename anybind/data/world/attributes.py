"""The latent attributes of a world sample and how the combinations are split.

A sample shows one object with four attributes: ``shape`` (8 solids), ``color`` (6 hues), ``size`` (small,
large) and ``motion`` (left, right, up, down): 384 combinations. Its ``label`` is the combination written
``color-shape-size-motion`` (``"red-cube-large-left"``), the match key of retrieval evaluation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SHAPES = ("cube", "sphere", "cone", "cylinder", "torus", "pyramid", "prism", "star")
COLORS = ("red", "yellow", "green", "cyan", "blue", "magenta")
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down")
ATTRIBUTE_NAMES = ("color", "shape", "size", "motion")  # the order of the label's parts

# Albedo (linear-ish RGB in [0, 1]); hues 60 degrees apart so they stay apart after shading and video chroma
# subsampling.
COLOR_RGB = {
    "red": (0.92, 0.10, 0.08),
    "yellow": (0.95, 0.82, 0.08),
    "green": (0.10, 0.78, 0.16),
    "cyan": (0.08, 0.80, 0.86),
    "blue": (0.14, 0.26, 0.96),
    "magenta": (0.86, 0.12, 0.84),
}
# Pitch of the sound: five semitones (a fourth) apart, so a +-2 semitone contour never reaches a neighbour's.
COLOR_BASE_HZ = {c: 200.0 * 2.0 ** (5 * i / 12) for i, c in enumerate(COLORS)}
# Unit vector of the motion in image coordinates (x right, y down) and in 3-D (x right, y up, z to the viewer).
MOTION_IMAGE = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTION_3D = {"left": (-1.0, 0.0, 0.0), "right": (1.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0), "down": (0.0, -1.0, 0.0)}


@dataclass(frozen=True)
class Attributes:
    """One combination of latent attributes."""

    shape: str
    color: str
    size: str
    motion: str

    def __post_init__(self):
        for name, allowed in (("shape", SHAPES), ("color", COLORS), ("size", SIZES), ("motion", MOTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def label(self) -> str:
        return label_of(self.as_dict())

    def as_dict(self) -> dict[str, str]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "motion": self.motion}

    @classmethod
    def from_label(cls, label: str) -> "Attributes":
        parts = label.split("-")
        if len(parts) != len(ATTRIBUTE_NAMES):
            raise ValueError(f"a world label is color-shape-size-motion, got {label!r}")
        return cls(**dict(zip(ATTRIBUTE_NAMES, parts)))


def label_of(attributes: dict[str, str], keys: tuple[str, ...] | list[str] = ATTRIBUTE_NAMES) -> str:
    """The match key of ``attributes`` over ``keys`` (all four by default), in label order.

    ``label_of(a, ("shape", "size", "motion"))`` is the key to use for a modality that cannot see colour.
    """
    unknown = set(keys) - set(ATTRIBUTE_NAMES)
    if unknown:
        raise ValueError(f"unknown attribute names {sorted(unknown)}; expected some of {ATTRIBUTE_NAMES}")
    return "-".join(attributes[k] for k in ATTRIBUTE_NAMES if k in keys)


def all_combinations(shapes=SHAPES, colors=COLORS, sizes=SIZES, motions=MOTIONS) -> list[Attributes]:
    """Every combination, in a fixed order (shape-major)."""
    return [Attributes(s, c, z, m) for s, c, z, m in itertools.product(shapes, colors, sizes, motions)]


def split_combinations(combos: list[Attributes], heldout_fraction: float, seed: int) -> tuple[list, list]:
    """Split combinations into (seen, held_out).

    Held-out combinations never appear in train/val/test. The choice is redrawn until every *pair* of attribute
    values (e.g. red+cube, cube+left) still occurs among the seen combinations, so a held-out combination is a
    new composition of things the model has seen, never an unseen value.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n_out = int(round(heldout_fraction * len(combos)))
    if n_out == 0:
        return list(combos), []
    rng = np.random.default_rng([seed, 7919])
    needed = _pairs(combos)
    for _ in range(1000):
        pick = set(rng.choice(len(combos), size=n_out, replace=False).tolist())
        seen = [c for i, c in enumerate(combos) if i not in pick]
        if _pairs(seen) == needed:
            return seen, [c for i, c in enumerate(combos) if i in pick]
    raise ValueError(f"cannot hold out {n_out} of {len(combos)} combinations and still see every attribute pair; "
                     "lower heldout_fraction")


def _pairs(combos) -> set:
    out = set()
    for c in combos:
        d = c.as_dict()
        out.update(itertools.combinations(sorted(d.items()), 2))
    return out


def balanced_draw(combos: list[Attributes], n: int, rng: np.random.Generator) -> list[Attributes]:
    """``n`` combinations cycling through shuffled rounds of ``combos`` (counts differ by at most one)."""
    out: list[Attributes] = []
    while len(out) < n:
        out.extend(combos[i] for i in rng.permutation(len(combos)))
    return out[:n]
