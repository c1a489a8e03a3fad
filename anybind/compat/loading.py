"""ImageBind-preprocessed batches from paths: :func:`load_and_transform` decodes each file ImageBind's way
(:mod:`anybind.data.readers.imagebind`) and runs it through :mod:`anybind.compat.preprocess`, whose transforms take
decoded data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.readers.imagebind import IMAGEBIND_READERS, read_audio_file, read_image_file, read_text_file
from . import preprocess as P

__all__ = ["load_and_transform", "read_audio_file", "read_image_file", "read_text_file"]


def load_and_transform(modality: str, items: Sequence[Any], contract: dict | None = None, *,
                       workers: int | None = None) -> torch.Tensor:
    """Batch helper: ImageBind-preprocess ``items`` (paths or raw data; for text, strings are the captions) of one
    modality with default contracts.

    Files are decoded and transformed on ``workers`` threads (default: the cores this process may use; 1 runs them
    in order on this thread). PIL's decoders and resizers and torch's kernels release the GIL, so images, audio and
    video scale with the cores; while the threads run, torch's own intra-op threads are set to 1 (restored after),
    so that the two kinds of threads do not fight over the cores. Text is tokenized on this thread (the tokenizer is
    Python). The output is the same whatever ``workers`` is."""
    factories = {"text": P.text_transform, "image": P.image_transform, "vision": P.image_transform,
                 "audio": P.audio_transform, "video": P.video_transform}
    if modality not in factories:
        raise ValueError(f"no ImageBind preprocessing for modality {modality!r}; known: {sorted(factories)}")
    fn = factories[modality](dict(contract or {}))

    def one(item: Any) -> torch.Tensor:
        if isinstance(item, Path) or (isinstance(item, str) and modality != "text"):
            item = IMAGEBIND_READERS[modality](item)
        return fn(item)

    items = list(items)
    if workers is None:
        from ..embedding import available_cores

        workers = available_cores()
    workers = max(1, min(int(workers), len(items)))
    if modality == "text" or workers == 1:
        return torch.stack([one(i) for i in items])
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anybind-preprocess") as pool:
            return torch.stack(list(pool.map(one, items)))
    finally:
        torch.set_num_threads(threads)
