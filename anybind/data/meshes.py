"""OFF and OBJ meshes, and surface sampling of any mesh: a fixed-seed, area-weighted draw of points.

A mesh gives :data:`MESH_SAMPLES` points drawn on its surface (triangles chosen in proportion to their area, with
the seed :data:`MESH_SEED` so a file always gives the same cloud); vertex colours are interpolated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .limits import LIMITS, limit_hint

MESH_SAMPLES = 8192
MESH_SEED = 0

__all__ = ["MESH_SAMPLES", "MESH_SEED", "parse_obj", "parse_off", "sample_surface"]


def parse_off(path: Path):
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().lstrip("CNST4").startswith("OFF"):
        raise InputError(path, "points", "not an OFF file (missing 'OFF' header)")
    head = lines[0]
    coloured = head.upper().startswith("C")
    rest = head[head.upper().index("OFF") + 3:].split()  # "OFF490 518 0" (counts glued to the header)
    if rest:
        counts, pos = rest, 1
    else:
        counts, pos = lines[1].split(), 2
    nv, nf = int(counts[0]), int(counts[1])
    if not (0 <= nv <= LIMITS.max_points and 0 <= nf <= LIMITS.max_points):
        raise InputError(path, "points", f"OFF header declares {nv} vertices and {nf} faces, outside 0 .. the "
                                         f"{limit_hint('max_points')}")
    vrows = lines[pos:pos + nv]
    frows = lines[pos + nv:pos + nv + nf]
    if len(vrows) < nv or len(frows) < nf:
        raise InputError(path, "points", f"truncated OFF: header declares {nv} vertices and {nf} faces, found "
                                         f"{len(vrows)} and {len(frows)}")
    vtok = [r.split() for r in vrows]
    xyz = np.array([t[:3] for t in vtok], dtype=np.float64).reshape(nv, 3)
    rgb = None
    if coloured and nv and all(len(t) >= 6 for t in vtok):
        rgb = np.array([t[3:6] for t in vtok], dtype=np.float64)
        rgb = rgb / 255.0 if rgb.max() > 1.0 else rgb
    faces = [np.array(r.split()[1:1 + int(r.split()[0])], dtype=np.int64) for r in frows]
    return xyz, rgb, faces


def parse_obj(path: Path):
    verts, faces = [], []
    for ln in path.read_text(encoding="utf-8").splitlines():
        tok = ln.split()
        if not tok:
            continue
        if tok[0] == "v":
            verts.append(tok[1:7] if len(tok) >= 7 else tok[1:4])
        elif tok[0] == "f":
            idx = np.array([int(t.split("/")[0]) for t in tok[1:]], dtype=np.int64)
            n = len(verts)
            faces.append(np.where(idx < 0, n + idx, idx - 1))  # 1-based; negative = relative to the end
    if not verts:
        raise InputError(path, "points", "OBJ file has no 'v' vertex lines")
    coloured = all(len(v) == 6 for v in verts)
    arr = np.array([v[:6] if coloured else v[:3] for v in verts], dtype=np.float64)
    xyz, rgb = arr[:, :3], None
    if coloured:
        rgb = arr[:, 3:6] / (255.0 if arr[:, 3:6].max() > 1.0 else 1.0)
    return xyz, rgb, faces



# ------------------------------------------------------------------------------------------ surface sampling


def _triangulate(path: Path, faces, num_vertices: int) -> np.ndarray:
    """Polygons (an (F, k) array or a list of index arrays) -> (T, 3) triangles by fan triangulation."""
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        groups = [faces]
    else:
        by_len: dict[int, list] = {}
        for f in faces:
            by_len.setdefault(len(f), []).append(f)
        groups = [np.stack(g) for g in by_len.values()]
    tris = []
    for g in groups:
        g = np.asarray(g, dtype=np.int64)
        if g.shape[1] < 3:
            continue  # points and edges have no surface
        for i in range(1, g.shape[1] - 1):
            tris.append(np.stack([g[:, 0], g[:, i], g[:, i + 1]], axis=1))
    if not tris:
        raise InputError(path, "points", "mesh has faces but none with 3 or more vertices")
    tris = np.concatenate(tris)
    bad = tris[(tris < 0) | (tris >= num_vertices)]
    if bad.size:
        raise InputError(path, "points", f"face refers to vertex {int(bad[0])} but the mesh has {num_vertices} "
                                         "vertices")
    return tris


def sample_surface(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, faces, n: int):
    tris = torch.from_numpy(_triangulate(path, faces, len(xyz)))
    v = torch.from_numpy(xyz)
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    area = torch.linalg.cross(b - a, c - a).norm(dim=1) * 0.5
    if not torch.isfinite(area).all() or float(area.sum()) <= 0.0:
        raise InputError(path, "points", "mesh surface has zero area (degenerate faces)")
    g = torch.Generator().manual_seed(MESH_SEED)
    pick = torch.multinomial(area, n, replacement=True, generator=g)
    u, w = torch.rand(2, n, 1, generator=g, dtype=torch.float64)
    su = u.sqrt()
    w0, w1, w2 = 1.0 - su, su * (1.0 - w), su * w  # uniform barycentric coordinates
    t = tris[pick]
    points = w0 * v[t[:, 0]] + w1 * v[t[:, 1]] + w2 * v[t[:, 2]]
    colours = None
    if rgb is not None:
        col = torch.from_numpy(rgb)
        colours = (w0 * col[t[:, 0]] + w1 * col[t[:, 1]] + w2 * col[t[:, 2]]).numpy()
    return points.numpy(), colours
