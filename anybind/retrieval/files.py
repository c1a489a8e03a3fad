"""The file formats embedding stores and indexes share: JSONL rows, ``.npy`` bytes, format-tagged JSON manifests.

Every reader here raises :class:`~anybind.errors.CheckpointError` naming the file it could not use.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import CheckpointError


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (C order, no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One JSON object a line (UTF-8, non-ASCII kept; values JSON cannot hold written as strings)."""
    return "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in rows).encode()


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (blank lines skipped); a damaged line raises, naming the file and the line."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        try:  # one parse of the whole file as an array: about twice as fast as a parse per line
            rows = json.loads("[" + ",".join(lines) + "]")
            if len(rows) == len(lines):
                return rows
        except json.JSONDecodeError:
            pass
        return [json.loads(line) for line in lines]  # names the damaged line
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"store file {path} could not be read: {exc}") from exc


def read_manifest(path: Path, fmt: str, *, label: str, kind: str, unreadable: str = "could not be read") -> dict:
    """The JSON manifest ``path`` of a folder anybind wrote, checked to say ``"format": fmt``.

    Messages: ``"<label> manifest <path> <unreadable>: <why>"`` for a file that cannot be read or parsed, and
    ``"<path> is not an anybind <kind> manifest (format=...)"`` for one of another format.
    """
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{label} manifest {path} {unreadable}: {exc}") from exc
    if manifest.get("format") != fmt:
        raise CheckpointError(f"{path} is not an anybind {kind} manifest (format={manifest.get('format')!r})")
    return manifest
