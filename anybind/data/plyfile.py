"""PLY point clouds and meshes (ASCII, binary little- and big-endian) -> ``(xyz, rgb | None, faces | None)``.

Element counts the header declares are checked against ``LIMITS.max_points`` before any body is parsed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .limits import LIMITS, limit_hint

__all__ = ["parse_ply"]

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
            count = int(tok[2])
            if count < 0 or count > LIMITS.max_points:
                raise InputError(path, "points", f"PLY header declares {count} {tok[1]!r} elements, outside 0 .. "
                                                 f"the {limit_hint('max_points')}")
            elements.append({"name": tok[1], "count": count, "props": []})
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


def parse_ply(path: Path):
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

