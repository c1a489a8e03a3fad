"""Point-cloud and mesh files -> float32 ``(N, 3)`` xyz or ``(N, 6)`` xyz + rgb in [0, 1].

* ``.npy`` / ``.npz``: an ``(N, C)`` array, ``C >= 3`` (``.npz``: key ``points`` or ``xyz``, else the first array)
* ``.ply``: ASCII, binary little- and big-endian; vertex ``x, y, z`` and optional ``red, green, blue``
* ``.xyz`` / ``.txt`` / ``.pts``: one point per line, whitespace- or comma-separated; ``#`` and ``//`` comment
  lines and a leading point-count line are skipped
* ``.off`` (also ``COFF``) and ``.obj`` meshes

A file with faces (OFF, OBJ, PLY with a ``face`` element) is a mesh: :data:`MESH_SAMPLES` points are drawn on its
surface, triangles chosen in proportion to their area, with a fixed seed so that a file always gives the same cloud;
vertex colours are interpolated. A mesh-less file gives its vertices.

Columns beyond xyz in arrays and text files: columns 3-5 are read as colour when they all lie in [0, 1] or are
whole numbers in [0, 255] (scaled to [0, 1]); otherwise (normals, intensities) they are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .files import check_file, load_array
from .limits import LIMITS, limit_hint
from .meshes import MESH_SAMPLES, MESH_SEED, parse_obj, parse_off, sample_surface
from .plyfile import parse_ply

__all__ = ["MESH_SAMPLES", "MESH_SEED", "POINT_EXTENSIONS", "read_points"]

POINT_EXTENSIONS = (".npy", ".npz", ".ply", ".xyz", ".txt", ".pts", ".off", ".obj")


def read_points(path: str | Path, *, mesh_samples: int = MESH_SAMPLES) -> torch.Tensor:
    """Read a point cloud or mesh (see the module docstring) -> float32 ``(N, 3)`` or ``(N, 6)``.

    Raises :class:`InputError` for an unknown extension, a damaged file, NaN/inf coordinates or no points, and for
    files past ``LIMITS.max_points_file_bytes`` (``LIMITS.max_points_text_bytes`` for text formats) or holding more
    than ``LIMITS.max_points`` points.
    """
    path = check_file(path, "points", max_bytes="max_points_file_bytes")
    suffix = path.suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise InputError(path, "points", f"unsupported extension {suffix!r} (expected {', '.join(POINT_EXTENSIONS)})")
    if suffix in _TEXT_FORMATS:
        check_file(path, "points", max_bytes="max_points_text_bytes")
    try:
        xyz, rgb, faces = parser(path)
    except InputError:
        raise
    except (ValueError, IndexError, KeyError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(path, "points", f"truncated or malformed {suffix} file ({type(exc).__name__}: {exc})") from exc
    if len(xyz) > LIMITS.max_points:
        raise InputError(path, "points", f"{len(xyz)} points, over the {limit_hint('max_points')}")
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise InputError(path, "points", f"no points found (parsed coordinates of shape {tuple(xyz.shape)})")
    if not np.isfinite(xyz).all():
        raise InputError(path, "points", f"{int((~np.isfinite(xyz)).any(1).sum())} point(s) have NaN or inf "
                                         "coordinates")
    if rgb is not None and not np.isfinite(rgb).all():
        raise InputError(path, "points", "colours contain NaN or inf")
    if faces is not None and len(faces):
        xyz, rgb = sample_surface(path, xyz, rgb, faces, mesh_samples)
    cloud = xyz if rgb is None else np.concatenate([xyz, np.clip(rgb, 0.0, 1.0)], axis=1)
    return torch.from_numpy(np.ascontiguousarray(cloud, dtype=np.float32))


# --------------------------------------------------------------------------------------------- column handling


def _split_columns(arr: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise InputError(path, "points", f"expected an (N, 3+) array of points, found shape {tuple(arr.shape)}")
    arr = arr.astype(np.float64, copy=False)
    xyz, rgb = arr[:, :3], None
    if arr.shape[1] >= 6:
        extra = arr[:, 3:6]
        if np.isfinite(extra).all():
            if extra.min() >= 0.0 and extra.max() <= 1.0:
                rgb = extra
            elif extra.min() >= 0.0 and extra.max() <= 255.0 and np.all(extra == np.round(extra)):
                rgb = extra / 255.0
    return xyz, rgb


def _parse_numpy(path: Path):
    arr = load_array(path, "points", prefer=("points", "xyz"), max_bytes="max_points_file_bytes")
    if arr.dtype.kind not in "fiu":
        raise InputError(path, "points", f"expected a numeric array, found dtype {arr.dtype}")
    xyz, rgb = _split_columns(arr, path)
    return xyz, rgb, None


_COMMENT = re.compile(r"^\s*(#|//).*$", re.MULTILINE)


def _parse_text(path: Path):
    text = path.read_text(encoding="utf-8", errors="strict")
    if "#" in text or "//" in text:
        text = _COMMENT.sub("", text)
    lines = [ln for ln in text.replace(",", " ").splitlines() if ln.strip()]
    if lines and len(lines[0].split()) == 1:  # a leading point count
        lines = lines[1:]
    if not lines:
        raise InputError(path, "points", "no points found in the text file")
    ncol = len(lines[0].split())
    values = np.array(" ".join(lines).split(), dtype=np.float64)
    if ncol < 3 or values.size != ncol * len(lines):
        raise InputError(path, "points", f"rows must all have the same number (>= 3) of columns; the first has "
                                         f"{ncol}, {values.size} values over {len(lines)} rows")
    xyz, rgb = _split_columns(values.reshape(len(lines), ncol), path)
    return xyz, rgb, None


_TEXT_FORMATS = (".xyz", ".txt", ".pts", ".off", ".obj")
_PARSERS = {
    ".npy": _parse_numpy, ".npz": _parse_numpy, ".ply": parse_ply, ".xyz": _parse_text, ".txt": _parse_text,
    ".pts": _parse_text, ".off": parse_off, ".obj": parse_obj,
}
