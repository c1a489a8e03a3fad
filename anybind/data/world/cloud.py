"""The point cloud of a world object: coloured surface samples, a motion trail and a fixed scale reference.

Readers normalise a cloud to the unit sphere, which would erase the object's size. So every cloud also holds
eight small marker clusters at the corners of a fixed box (``MARKER_HALF`` = 1.6 units, grey): they are always the
farthest points, so after normalisation the object's extent relative to the markers still tells small (radius
~0.45 units) from large (~0.95). Motion shows as two sparser, greyer copies of the object displaced behind it
(0.3 and 0.6 units), like the ghosts of the images. Colour is carried by the rgb channels only: an encoder
that reads xyz alone cannot see it (see docs/world.md).
"""

from __future__ import annotations

import functools

import numpy as np

from .attributes import COLOR_RGB, MOTION_3D
from .render import hsv_jitter
from .shapes import posed_sdf, rot_y, rot_z, sample_surface

BANK_SIZE = 8192  # surface points drawn once per shape and process; each cloud is a random subset

SCALE = {"small": 0.45, "large": 0.95}
MARKER_HALF = 1.6
MARKER_POINTS = 8        # per corner
MARKER_GREY = 0.6
GHOST_SHARE = (0.22, 0.12)  # fraction of all points in the near / far ghost
GHOST_OFFSET = (0.3, 0.6)
GHOST_FADE = (0.5, 0.72)    # mix towards grey (saturation ~0.6 and ~0.35 against ~0.9 for the object)


def surface_bank(shape: str, size: int = BANK_SIZE) -> np.ndarray:
    """``size`` points spread over the posed surface of ``shape`` (fixed seed: the same in every process)."""
    return _bank(shape, int(size))


@functools.lru_cache(maxsize=None)
def _bank(shape: str, size: int) -> np.ndarray:
    from .attributes import SHAPES

    rng = np.random.default_rng([SHAPES.index(shape), 4099])
    points, _ = sample_surface(posed_sdf(shape, np.eye(3)), size, rng)
    points.setflags(write=False)
    return points


def make_cloud(shape: str, color: str, size: str, motion: str, rng: np.random.Generator, *,
               num_points: int = 1024) -> np.ndarray:
    """``(num_points, 6)`` float32 xyz + rgb in [0, 1], points in random order."""
    n_markers = 8 * MARKER_POINTS
    n_ghosts = [int(round(share * num_points)) for share in GHOST_SHARE]
    n_object = num_points - n_markers - sum(n_ghosts)
    if n_object < 16:
        raise ValueError(f"num_points={num_points} is too small for a world cloud (needs at least {n_markers + 64})")

    rotation = rot_y(rng.uniform(-20, 20)) @ rot_z(rng.uniform(-6, 6))
    needed = n_object + max(n_ghosts)
    bank = surface_bank(shape, BANK_SIZE if needed <= BANK_SIZE else 1 << (needed - 1).bit_length())
    pick = rng.choice(len(bank), size=needed, replace=False)
    surface = bank[pick] @ rotation.T
    scale = SCALE[size] * rng.uniform(0.92, 1.08)
    centre = rng.uniform(-0.05, 0.05, size=3)
    albedo = hsv_jitter(COLOR_RGB[color], rng)
    behind = -np.asarray(MOTION_3D[motion])

    parts = [(surface[:n_object] * scale + centre, albedo)]
    for count, offset, fade in zip(n_ghosts, GHOST_OFFSET, GHOST_FADE):
        pick = rng.choice(len(surface), size=count, replace=False)
        parts.append((surface[pick] * scale + centre + offset * behind, albedo * (1 - fade) + 0.5 * fade))
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * MARKER_HALF
    markers = np.repeat(corners, MARKER_POINTS, axis=0) + rng.normal(0, 0.02, size=(n_markers, 3))
    parts.append((markers, np.full(3, MARKER_GREY)))

    xyz = np.concatenate([p for p, _ in parts]) + rng.normal(0, 0.004, size=(num_points, 3))
    rgb = np.concatenate([np.broadcast_to(c, (len(p), 3)) for p, c in parts])
    rgb = np.clip(rgb + rng.normal(0, 0.02, size=rgb.shape), 0, 1)
    order = rng.permutation(num_points)
    return np.concatenate([xyz, rgb], 1)[order].astype(np.float32)
