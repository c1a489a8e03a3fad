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

MESH_SAMPLES = 8192
MESH_SEED = 0
POINT_EXTENSIONS = (".npy", ".npz", ".ply", ".xyz", ".txt", ".pts", ".off", ".obj")


def read_points(path: str | Path, *, mesh_samples: int = MESH_SAMPLES) -> torch.Tensor:
    """Read a point cloud or mesh (see the module docstring) -> float32 ``(N, 3)`` or ``(N, 6)``.

    Raises :class:`InputError` for an unknown extension, a damaged file, NaN/inf coordinates or no points.
    """
    from .readers import check_file

    path = check_file(path, "points")
    suffix = path.suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise InputError(path, "points", f"unsupported extension {suffix!r} (expected {', '.join(POINT_EXTENSIONS)})")
    try:
        xyz, rgb, faces = parser(path)
    except InputError:
        raise
    except (ValueError, IndexError, KeyError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(path, "points", f"truncated or malformed {suffix} file ({type(exc).__name__}: {exc})") from exc
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise InputError(path, "points", f"no points found (parsed coordinates of shape {tuple(xyz.shape)})")
    if not np.isfinite(xyz).all():
        raise InputError(path, "points", f"{int((~np.isfinite(xyz)).any(1).sum())} point(s) have NaN or inf "
                                         "coordinates")
    if rgb is not None and not np.isfinite(rgb).all():
        raise InputError(path, "points", "colours contain NaN or inf")
    if faces is not None and len(faces):
        xyz, rgb = _sample_surface(path, xyz, rgb, faces, mesh_samples)
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
    arr = np.load(path, allow_pickle=False)
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            if not arr.files:
                raise InputError(path, "points", ".npz archive holds no arrays")
            key = next((k for k in ("points", "xyz") if k in arr.files), arr.files[0])
            arr = arr[key]
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


# ------------------------------------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}


def _ply_header(path: Path, data: bytes):
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(path, "points", "not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for raw in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tok = raw.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if tok[1] == "list":
                elements[-1]["props"].append((tok[4], "list", _PLY_TYPES[tok[2]], _PLY_TYPES[tok[3]]))
            else:
                elements[-1]["props"].append((tok[2], "scalar", _PLY_TYPES[tok[1]], None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(path, "points", f"unknown PLY format {fmt!r}")
    return fmt, elements, body_start


def _ply_binary_element(data: bytes, offset: int, el: dict, endian: str):
    """One binary element -> (dict name -> array, new offset). Fixed-size lists are read in one go."""
    props, count = el["props"], el["count"]
    lists = [p for p in props if p[1] == "list"]
    if not lists:
        dtype = np.dtype([(n, endian + t) for n, _, t, _ in props])
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return {n: arr[n] for n in arr.dtype.names}, offset + dtype.itemsize * count
    if len(props) == 1 and count > 0:  # the usual face element: one list, try a uniform length
        name, _, ctype, itype = props[0]
        k = int(np.frombuffer(data, dtype=endian + ctype, count=1, offset=offset)[0])
        dtype = np.dtype([("n", endian + ctype), ("v", endian + itype, (k,))])
        if offset + dtype.itemsize * count <= len(data):
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if np.all(arr["n"] == k):
                return {name: arr["v"].astype(np.int64)}, offset + dtype.itemsize * count
    out: dict[str, list] = {p[0]: [] for p in props}  # mixed list lengths: element by element
    for _ in range(count):
        for name, kind, t1, t2 in props:
            if kind == "scalar":
                out[name].append(np.frombuffer(data, dtype=endian + t1, count=1, offset=offset)[0])
                offset += np.dtype(t1).itemsize
            else:
                k = int(np.frombuffer(data, dtype=endian + t1, count=1, offset=offset)[0])
                offset += np.dtype(t1).itemsize
                out[name].append(np.frombuffer(data, dtype=endian + t2, count=k, offset=offset).astype(np.int64))
                offset += np.dtype(t2).itemsize * k
    kinds = {p[0]: p[1] for p in props}
    return {n: (v if kinds[n] == "list" else np.array(v)) for n, v in out.items()}, offset


def _ply_ascii_element(lines: list[str], start: int, el: dict, path: Path):
    count, props = el["count"], el["props"]
    rows = lines[start:start + count]
    if len(rows) < count:
        raise InputError(path, "points", f"truncated PLY: element {el['name']!r} declares {count} rows, found "
                                         f"{len(rows)}")
    if all(p[1] == "scalar" for p in props):
        vals = np.array(" ".join(rows).split(), dtype=np.float64)
        if vals.size != count * len(props):
            raise InputError(path, "points", f"PLY element {el['name']!r}: expected {len(props)} values per row")
        vals = vals.reshape(count, len(props))
        return {p[0]: vals[:, i] for i, p in enumerate(props)}, start + count
    out: dict[str, list] = {p[0]: [] for p in props}
    for row in rows:
        tok, i = row.split(), 0
        for name, kind, _, _ in props:
            if kind == "scalar":
                out[name].append(float(tok[i]))
                i += 1
            else:
                k = int(tok[i])
                out[name].append(np.array(tok[i + 1:i + 1 + k], dtype=np.int64))
                i += 1 + k
    return out, start + count


def _parse_ply(path: Path):
    data = path.read_bytes()
    fmt, elements, body = _ply_header(path, data)
    needed = {"vertex"} | {el["name"] for el in elements if el["name"] == "face"}
    parsed: dict[str, dict] = {}
    lines, pos, offset = None, 0, body
    endian = "<" if fmt == "binary_little_endian" else ">"
    if fmt == "ascii":
        lines = [ln for ln in data[body:].decode("ascii").splitlines() if ln.strip()]
    for el in elements:
        if needed <= parsed.keys():
            break  # trailing elements (edges, materials) are not needed
        if fmt == "ascii":
            parsed[el["name"]], pos = _ply_ascii_element(lines, pos, el, path)
        else:
            parsed[el["name"]], offset = _ply_binary_element(data, offset, el, endian)
    if "vertex" not in parsed:
        raise InputError(path, "points", "PLY file has no 'vertex' element")
    v = parsed["vertex"]
    if not all(k in v for k in "xyz"):
        raise InputError(path, "points", f"PLY vertices lack x/y/z properties (found {', '.join(v)})")
    xyz = np.stack([np.asarray(v[k], dtype=np.float64) for k in "xyz"], axis=1)
    rgb = None
    for names in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(n in v for n in names):
            raw = [np.asarray(v[n]) for n in names]
            rgb = np.stack(raw, axis=1).astype(np.float64)
            kinds = {a.dtype.kind for a in raw}
            vtype = dict((p[0], p[2]) for el in elements if el["name"] == "vertex" for p in el["props"])
            scale = {"u1": 255.0, "u2": 65535.0}.get(vtype.get(names[0]), None)
            if scale is None:
                scale = 255.0 if (kinds & set("iu") or rgb.max() > 1.0) else 1.0
            rgb = rgb / scale
            break
    faces = None
    if "face" in parsed:
        f = parsed["face"]
        key = next((k for k in ("vertex_indices", "vertex_index") if k in f), None)
        if key is not None:
            faces = f[key]
    return xyz, rgb, faces


# ------------------------------------------------------------------------------------------------ OFF / OBJ


def _parse_off(path: Path):
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


def _parse_obj(path: Path):
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


_PARSERS = {
    ".npy": _parse_numpy, ".npz": _parse_numpy, ".ply": _parse_ply, ".xyz": _parse_text, ".txt": _parse_text,
    ".pts": _parse_text, ".off": _parse_off, ".obj": _parse_obj,
}


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


def _sample_surface(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, faces, n: int):
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
