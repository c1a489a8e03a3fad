"""Small files a library tower needs beside its weights (a Hugging Face folder's config, tokenizer, feature
extractor, pooling config), bundled with a saved checkpoint so that it loads without the original folder.

``save_model`` copies them to ``<checkpoint>.assets/<modality>/`` before the checkpoint itself is written (the
sidecar never names a bundle that is not complete) and records ``"assets": "<checkpoint>.assets/<modality>"``; the
tower's folder path in its builder arguments and input contract is stored as :data:`MARKER`, which ``anybind.load``
replaces with the bundle's absolute path. Weight files are never copied: the checkpoint holds the tensors.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MARKER = "@assets"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".ot", ".gguf",
                   ".tflite", ".npz")
SKIP_DIRS = {"onnx", "openvino", ".git", "__pycache__", ".cache"}
MAX_FILE_BYTES = 64 << 20  # a tokenizer or vocabulary is far below this; anything larger is not a config file


def asset_files(folder: Path) -> list[Path]:
    """Files of ``folder`` (recursively, relative paths) a tower needs to rebuild: everything but weights."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            p = Path(root) / name
            if p.suffix.lower() in WEIGHT_SUFFIXES or p.stat().st_size > MAX_FILE_BYTES:
                continue
            out.append(p.relative_to(folder))
    return out


def bundle(folder: str | Path, dest: Path) -> Path:
    """Copy ``folder``'s asset files to ``dest`` (a fresh folder swapped in whole: never half a bundle)."""
    folder = Path(folder)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in asset_files(folder):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / rel, tmp / rel)
    tmp.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def substitute(value: Any, old: str, new: str) -> Any:
    """``value`` with every string equal to ``old`` replaced by ``new`` (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: substitute(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(substitute(v, old, new) for v in value)
    return new if isinstance(value, str) and value == old else value
