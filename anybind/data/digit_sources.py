"""Readers of the spoken-digits sources: MNIST's idx files (plain or gzipped) and the Free Spoken Digit Dataset's
``{digit}_{speaker}_{take}.wav`` recordings (used by :mod:`anybind.data.digits`)."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
IDX_MAGIC = {2051: 3, 2049: 1}  # images (N, rows, cols), labels (N,) ; dtype byte 0x08 = uint8


def read_idx(path: str | Path) -> np.ndarray:
    """An MNIST idx file (``.gz`` or raw) -> uint8 array: images ``(N, 28, 28)`` or labels ``(N,)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mnist", "file does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(path, "mnist", f"cannot be read ({exc})") from exc
    if len(data) < 8:
        raise InputError(path, "mnist", f"too short for an idx header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGIC:
        raise InputError(path, "mnist", f"not a uint8 idx file (magic {magic:#010x}, expected 0x00000803 or 0x00000801)")
    ndim = IDX_MAGIC[magic]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    size = int(np.prod(dims))
    if len(data) - start != size:
        raise InputError(path, "mnist", f"header says {dims} = {size} bytes of data, the file holds {len(data) - start}")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise InputError(folder / f"{stem}.gz", "mnist", f"no {stem}(.gz) in {folder}")


def load_mnist(folder: str | Path, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels uint8 (N,))`` from ``{prefix}-images-idx3-ubyte(.gz)`` and labels."""
    folder = Path(folder)
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(folder, "mnist", f"images {images.shape} and labels {labels.shape} do not match")
    if labels.max(initial=0) > 9:
        raise InputError(folder, "mnist", f"labels must be digits 0-9, found {int(labels.max())}")
    return images, labels


@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def id(self) -> str:
        return self.path.stem  # "7_theo_12"


def list_fsdd(folder: str | Path) -> list[Recording]:
    """Every ``{digit}_{speaker}_{take}.wav`` in ``folder``, sorted; any other ``.wav`` name raises."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "audio", "FSDD recordings folder does not exist")
    out = []
    for p in sorted(folder.glob("*.wav")):
        m = FSDD_NAME.match(p.name)
        if m is None:
            raise InputError(p, "audio", "FSDD file names are {digit}_{speaker}_{take}.wav")
        out.append(Recording(p.resolve(), int(m.group(1)), m.group(2), int(m.group(3))))
    if not out:
        raise InputError(folder, "audio", "no .wav recordings in the FSDD folder")
    return out
