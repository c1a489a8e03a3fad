"""File safety for everything anybind writes and reads back.

* :mod:`anybind.io.atomic`: atomic replacement, writer locks, folders anybind may own;
* :mod:`anybind.io.tensorfile`: safetensors weights plus a JSON sidecar, switched as one pair.

Nothing here imports PyTorch at import time.
"""

from .atomic import (LOCK_NAME, LockedError, WriterLock, atomic_write_bytes, atomic_write_json, check_owned_folder,
                     clean_temp_files, fsync_dir, sha256_file)
from .tensorfile import (FORMAT, MAX_SIDECAR_BYTES, VERSION, load_tensors, pair_paths, read_safetensors, read_sidecar,
                         read_weights, save_tensors, tensor_shapes)

__all__ = [
    "FORMAT", "LOCK_NAME", "LockedError", "MAX_SIDECAR_BYTES", "VERSION", "WriterLock", "atomic_write_bytes",
    "atomic_write_json", "check_owned_folder", "clean_temp_files", "fsync_dir", "load_tensors", "pair_paths",
    "read_safetensors", "read_sidecar", "read_weights", "save_tensors", "sha256_file", "tensor_shapes",
]
