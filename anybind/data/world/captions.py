"""Captions: templates with synonyms and varied word order; every caption names all four attributes.

No synonym of one value is a word of another value's synonym, so :func:`parse_caption` recovers the attributes
from any caption (the tests use it to check that captions carry their attributes).
"""

from __future__ import annotations

import re

import numpy as np

SHAPE_WORDS = {
    "cube": ("cube", "box", "block"),
    "sphere": ("sphere", "ball", "orb"),
    "cone": ("cone", "conical spike"),
    "cylinder": ("cylinder", "tube", "drum"),
    "torus": ("torus", "ring", "donut"),
    "pyramid": ("pyramid", "square pyramid"),
    "prism": ("prism", "triangular prism", "wedge"),
    "star": ("star", "star shape"),
}
COLOR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "cyan": ("cyan", "turquoise", "teal"),
    "blue": ("blue", "cobalt", "azure"),
    "magenta": ("magenta", "fuchsia", "purple"),
}
SIZE_WORDS = {
    "small": ("small", "little", "tiny", "miniature"),
    "large": ("large", "big", "huge", "giant"),
}
# (phrase after a verb, adjective before the noun)
MOTION_PHRASES = {
    "left": ("left", "to the left", "leftwards"),
    "right": ("right", "to the right", "rightwards"),
    "up": ("up", "upwards", "skywards"),
    "down": ("down", "downwards", "towards the ground"),
}
MOTION_ADJECTIVES = {
    "left": ("leftward-moving", "left-moving", "left-drifting"),
    "right": ("rightward-moving", "right-moving", "right-drifting"),
    "up": ("rising", "ascending", "upward-moving"),
    "down": ("falling", "descending", "sinking"),
}
VERBS = ("moving", "drifting", "sliding", "travelling", "heading", "gliding")

TEMPLATES = (
    "a {size} {color} {shape} {verb} {dir}",
    "{adj} {size} {color} {shape}",
    "the {color} {shape} is {size} and {verb} {dir}",
    "{verb} {dir}: a {size} {color} {shape}",
    "a {color} {shape}, {size}, {verb} {dir}",
    "there is a {size} {color} {shape} {verb} {dir}",
    "{size} {shape} in {color}, {verb} {dir}",
    "a {adj} {color} {shape} of {size} size",
    "one {size} {shape}, colored {color}, {verb} {dir}",
    "{color} and {size}: a {adj} {shape}",
)


def caption(shape: str, color: str, size: str, motion: str, rng: np.random.Generator) -> str:
    """A random caption of the four attributes."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    template = pick(TEMPLATES)
    text = template.format(
        size=pick(SIZE_WORDS[size]), color=pick(COLOR_WORDS[color]), shape=pick(SHAPE_WORDS[shape]),
        verb=pick(VERBS), dir=pick(MOTION_PHRASES[motion]), adj=pick(MOTION_ADJECTIVES[motion]),
    )
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption names: ``{"shape": ..., "color": ..., "size": ..., "motion": ...}``.

    Raises ``ValueError`` when an attribute is missing or ambiguous.
    """
    lowered = text.lower()
    out = {}
    for name, table in (("shape", SHAPE_WORDS), ("color", COLOR_WORDS), ("size", SIZE_WORDS),
                        ("motion", {m: MOTION_PHRASES[m] + MOTION_ADJECTIVES[m] for m in MOTION_PHRASES})):
        found = {value for value, words in table.items()
                 if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", lowered) for w in words)}
        if len(found) != 1:
            raise ValueError(f"caption {text!r} names {name} {sorted(found) or 'nothing'}; expected exactly one")
        out[name] = found.pop()
    return out
