"""Pictures of a world object: a shaded sprite, composited onto a background with a motion trail.

The object is rendered once per sample (orthographic sphere tracing of its SDF, Lambert diffuse + a specular
highlight, anti-aliased edges) into a sprite aligned to the image's pixel grid; the still image and every video
frame paste that sprite at integer offsets. Behind the object trail three fading copies ("ghosts"), so a still
image shows which way the object moves; in the video the object also travels that way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attributes import COLOR_RGB, MOTION_IMAGE
from .shapes import gradient, march, posed_sdf, rot_x, rot_y, rot_z

# Object radius in pixels as a fraction of the image side (the solids have a radius of ~1 in object units).
SIZE_FRACTION = {"small": 0.17, "large": 0.29}
GHOST_OPACITY = (0.45, 0.28, 0.14)  # nearest ghost first
GHOST_STEP = 0.65                  # ghost spacing in object radii


@dataclass
class Sprite:
    """Premultiplied-free RGB ``(h, w, 3)`` and coverage ``(h, w)`` in [0, 1]; ``top``/``left`` in image pixels."""

    rgb: np.ndarray
    alpha: np.ndarray
    top: int
    left: int


def hsv_jitter(rgb, rng: np.random.Generator, hue_deg: float = 6.0, sat: float = 0.06, val: float = 0.08):
    """Small random change of hue (degrees), saturation and value of an RGB colour (kept in [0, 1])."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.uniform(-hue_deg, hue_deg) / 360.0) % 1.0
    s = float(np.clip(s * (1 + rng.uniform(-sat, sat)), 0, 1))
    v = float(np.clip(v * (1 + rng.uniform(-val, val)), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def render_sprite(shape: str, albedo: np.ndarray, center: tuple[float, float], radius_px: float,
                  rng: np.random.Generator) -> Sprite:
    """Render ``shape`` with its centre at ``center`` (x, y in image pixels) and radius ``radius_px``.

    Jitter drawn from ``rng``: the object's yaw (+-15 deg) and roll (+-6 deg), the camera's elevation (25-38 deg)
    and the light's direction.
    """
    rotation = rot_y(rng.uniform(-15, 15)) @ rot_z(rng.uniform(-6, 6))
    sdf = posed_sdf(shape, rotation)
    elev = np.deg2rad(rng.uniform(25, 38))
    cam = np.array([0.0, np.sin(elev), np.cos(elev)])           # direction to the camera
    forward = -cam
    right = np.array([1.0, 0.0, 0.0])
    up = np.cross(right, forward)
    light = rot_y(rng.uniform(-30, 30)) @ rot_x(rng.uniform(-15, 15)) @ np.array([-0.45, 0.75, 0.6])
    light /= np.linalg.norm(light)

    half = int(np.ceil(1.12 * radius_px)) + 1
    cx, cy = center
    left, top = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    xs = (np.arange(left, left + 2 * half + 1) + 0.5 - cx) / radius_px
    ys = -(np.arange(top, top + 2 * half + 1) + 0.5 - cy) / radius_px
    gx, gy = np.meshgrid(xs, ys)
    origins = gx.reshape(-1, 1) * right + gy.reshape(-1, 1) * up + 3.0 * cam
    hit, t, d = march(sdf, origins, forward, 1.7, 4.3)

    pixel = 1.0 / radius_px
    alpha = np.where(hit, 1.0, np.clip(1.0 - d / pixel, 0.0, 1.0))
    covered = alpha > 0
    shade = np.zeros(len(origins))
    spec = np.zeros(len(origins))
    if covered.any():
        n = gradient(sdf, origins[covered] + t[covered, None] * forward)
        diffuse = np.clip(n @ light, 0.0, None)
        halfway = (light + cam) / np.linalg.norm(light + cam)
        shade[covered] = 0.3 + 0.7 * diffuse
        spec[covered] = 0.3 * np.clip(n @ halfway, 0.0, None) ** 24
    rgb = albedo[None, :] * shade[:, None] + spec[:, None]
    size = 2 * half + 1
    return Sprite(np.clip(rgb, 0, 1).reshape(size, size, 3), alpha.reshape(size, size), top, left)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A neutral grey ground with a soft vertical gradient, a faint low-frequency texture and pixel noise."""
    base = rng.uniform(0.42, 0.62)
    tint = rng.uniform(-0.02, 0.02, size=3)
    grad = np.linspace(-1, 1, size)[:, None, None] * rng.uniform(-0.07, 0.07)
    coarse = rng.normal(0, 0.025, size=(5, 5))
    idx = np.linspace(0, 4, size)
    i0 = np.floor(idx).astype(int).clip(0, 3)
    f = idx - i0
    rows = coarse[i0] * (1 - f[:, None]) + coarse[i0 + 1] * f[:, None]
    tex = rows[:, i0] * (1 - f[None, :]) + rows[:, i0 + 1] * f[None, :]
    img = base + tint[None, None, :] + grad + tex[:, :, None] + rng.normal(0, 0.008, size=(size, size, 1))
    return np.clip(img, 0, 1)


def paste(canvas: np.ndarray, sprite: Sprite, dx: int = 0, dy: int = 0, opacity: float = 1.0) -> None:
    """Alpha-blend ``sprite`` shifted by (dx, dy) pixels onto ``canvas`` in place, clipped to the canvas."""
    h, w = canvas.shape[:2]
    sh, sw = sprite.alpha.shape
    top, left = sprite.top + dy, sprite.left + dx
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + sh, h), min(left + sw, w)
    if y0 >= y1 or x0 >= x1:
        return
    a = sprite.alpha[y0 - top:y1 - top, x0 - left:x1 - left, None] * opacity
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + sprite.rgb[y0 - top:y1 - top, x0 - left:x1 - left] * a


def draw(canvas: np.ndarray, sprite: Sprite, motion: str, radius_px: float, dx: int = 0, dy: int = 0) -> None:
    """The object at offset (dx, dy) with its ghost trail behind it (opposite to ``motion``)."""
    mx, my = MOTION_IMAGE[motion]
    step = GHOST_STEP * radius_px
    for k in range(len(GHOST_OPACITY), 0, -1):  # farthest ghost first
        off = int(round(k * step))
        paste(canvas, sprite, dx - mx * off, dy - my * off, GHOST_OPACITY[k - 1])
    paste(canvas, sprite, dx, dy)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(shape: str, color: str, size: str, motion: str, rng: np.random.Generator, *, image_size: int = 64,
                 frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The still image ``(S, S, 3)`` and the video ``(frames, S, S, 3)`` (uint8) of one object.

    Both share one sprite. In the image the object sits off-centre towards its motion so its trail fits; in the
    video it travels 0.3 S along its motion from a jittered start, trailing its ghosts in every frame.
    """
    s = image_size
    radius = SIZE_FRACTION[size] * s * rng.uniform(0.92, 1.08)
    albedo = hsv_jitter(COLOR_RGB[color], rng)
    mx, my = MOTION_IMAGE[motion]
    travel = 0.3 * s
    margin = radius * 1.05
    lo, hi = margin, s - margin

    # Video: start so the whole path stays inside the frame; the sprite is rendered at the start position.
    along0 = s / 2 - travel / 2 + rng.uniform(-0.05, 0.05) * s
    across = s / 2 + rng.uniform(-0.12, 0.12) * s
    along0 = float(np.clip(along0, lo, hi - travel))
    across = float(np.clip(across, lo, hi))
    start = (s / 2 + mx * (along0 - s / 2) + (across - s / 2) * abs(my),
             s / 2 + my * (along0 - s / 2) + (across - s / 2) * abs(mx))
    sprite = render_sprite(shape, albedo, start, radius, rng)

    bg = background(s, rng)
    video = np.empty((frames, s, s, 3), np.uint8)
    for f in range(frames):
        off = int(round(travel * f / max(frames - 1, 1)))
        frame = bg.copy()
        draw(frame, sprite, motion, radius, mx * off, my * off)
        video[f] = to_uint8(frame)

    # Image: the object a little past the middle of its path (plus jitter), over a fresh background.
    off = int(round(travel * rng.uniform(0.55, 0.85)))
    img = background(s, rng)
    draw(img, sprite, motion, radius, mx * off, my * off)
    return to_uint8(img), video
