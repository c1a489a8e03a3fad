"""File checks shared by every reader: existence, type, size limits. No decoding happens here."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .limits import LIMITS, limit_hint

__all__ = ["check_file", "load_array"]


def check_file(path: str | Path, modality: str, *, max_bytes: str | None = None) -> Path:
    """``path`` as a Path, after checking that it is an existing, non-empty regular file.

    ``max_bytes`` names a field of :data:`~anybind.data.limits.LIMITS`; a larger file raises before any byte is read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, modality, "file does not exist")
    if not path.is_file():
        raise InputError(path, modality, "is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, modality, "file is empty (0 bytes)")
    if max_bytes is not None and size > getattr(LIMITS, max_bytes):
        raise InputError(path, modality, f"file is {size} bytes, over the {limit_hint(max_bytes)}")
    return path


def load_array(path: Path, modality: str, *, prefer: tuple[str, ...] = (), max_bytes: str):
    """The array of a ``.npy`` file, or of one ``.npz`` member (the first of ``prefer`` present, else the first).

    Pickles are refused; an ``.npz`` member whose uncompressed size passes ``LIMITS.<max_bytes>`` is refused before it
    is inflated (a small archive can hold a huge array).
    """
    import numpy as np

    arr = np.load(path, allow_pickle=False)
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            if not arr.files:
                raise InputError(path, modality, ".npz archive holds no arrays")
            key = next((k for k in prefer if k in arr.files), arr.files[0])
            size = arr.zip.getinfo(key + ".npy").file_size
            if size > getattr(LIMITS, max_bytes):
                raise InputError(path, modality, f".npz member {key!r} inflates to {size} bytes, over the "
                                                 f"{limit_hint(max_bytes)}")
            arr = arr[key]
    return arr
