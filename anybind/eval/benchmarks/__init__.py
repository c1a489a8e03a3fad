"""Benchmark adapters: local copies of the field's standard datasets, read in their published layouts.

=============  ==============  ==========================================================================
name           task            layout (see each module)
=============  ==============  ==========================================================================
``esc50``      classification  ``meta/esc50.csv`` + ``audio/*.wav``, 5 folds
``modelnet40`` classification  ``<class>/{train,test}/*.off``, normal_resampled ``.txt``, HDF5 (needs h5py)
``folder``     classification  ``<root>[/<split>]/<class>/<files>``, any modality
``msrvtt``     retrieval       ``MSRVTT_JSFUSION_test.csv`` (1k-A) or the caption JSON + ``videos/all/*.mp4``
``clotho``     retrieval       ``clotho_captions_<split>.csv`` + ``<split>/*.wav``
``audiocaps``  retrieval       ``<split>.csv`` + ``<split>/<youtube_id>.wav``
``coco``       retrieval       Karpathy's ``dataset_coco.json`` or ``captions_<split>.json`` + the images
=============  ==============  ==========================================================================
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

from ..errors import BenchmarkError
from .audio_captions import load_audiocaps, load_clotho
from .base import BenchmarkData, Item, asset
from .coco import load_coco
from .esc50 import load_esc50
from .folder import load_folder
from .modelnet40 import load_modelnet40
from .msrvtt import load_msrvtt

BENCHMARKS: dict[str, Callable[..., BenchmarkData]] = {
    "esc50": load_esc50, "modelnet40": load_modelnet40, "folder": load_folder, "msrvtt": load_msrvtt,
    "clotho": load_clotho, "audiocaps": load_audiocaps, "coco": load_coco,
}

__all__ = ["BENCHMARKS", "BenchmarkData", "BenchmarkError", "Item", "asset", "list_benchmarks", "load_benchmark"]


def list_benchmarks() -> list[str]:
    return sorted(BENCHMARKS)


def load_benchmark(name: str, root: str | Path, **options: Any) -> BenchmarkData:
    """Read benchmark ``name`` from the local copy at ``root``; ``options`` are the adapter's (``fold``,
    ``split``, ``modality``, ``templates``, ...). Options set to ``None`` take the adapter's default."""
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, BENCHMARKS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BenchmarkError(f"unknown benchmark {name!r} (known: {', '.join(list_benchmarks())}){hint}")
    if root in (None, "", "???"):
        raise BenchmarkError(f"benchmark {name}: give the local copy's folder, benchmark.root=<path>")
    root = Path(root).expanduser()
    if not root.exists():
        raise BenchmarkError(f"benchmark {name}: {root} does not exist")
    return BENCHMARKS[name](root, **{k: v for k, v in options.items() if v is not None})
