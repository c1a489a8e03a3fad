"""``trainer.cache_frozen=true``: embed each sample once with every frozen tower instead of at every step.

A frozen tower (``freeze=[...]``) runs in eval mode without gradient, so with preloaded, un-augmented inputs its
output for a sample is the same at every step: computing it once per distinct preloaded tensor, before training,
gives the loss and gradients of the uncached run (up to float rounding from the different batch shapes) for
none of the frozen towers' per-step cost. The bind stage of ``anybind-demo`` (image frozen, audio, video and
points learning to land next to it) is the case it was made for.

The preloaded tensors of such a modality are replaced in the dataset's cache by their ``(D,)`` embeddings
(:meth:`~anybind.data.dataset.ManifestDataset.use_embeddings`), batches carry ``(n, D)`` rows for it, and
:class:`~anybind.train.module.TrainModule` passes those rows to the loss as they are (its ``precomputed``
modalities). Only modalities a trained pair uses are cached; a frozen tower outside every pair is never run at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Sequence

import torch

from ..modality import get_modality

log = logging.getLogger("anybind.train")


def check_cacheable(modalities: Sequence[str], *, preload: bool, streamed: bool, augmented: Sequence[str]) -> None:
    """Raise ``ValueError`` (naming the setting to change) when the frozen ``modalities`` cannot be cached."""
    if not modalities:
        return
    if streamed:
        raise ValueError("trainer.cache_frozen=true needs manifest data with data.preload=true; streamed shards "
                         "(data=shards) are read once per epoch and cannot be embedded ahead of training")
    if not preload:
        raise ValueError(f"trainer.cache_frozen=true needs data.preload=true (the frozen {', '.join(modalities)} "
                         f"inputs are embedded once, from the preloaded tensors)")
    bad = [m for m in modalities if m in augmented]
    if bad:
        raise ValueError(f"trainer.cache_frozen=true: the frozen {', '.join(bad)} input is augmented "
                         f"(modality.{bad[0]}.augment), so its embedding changes every epoch; drop the augmentation "
                         f"or set trainer.cache_frozen=false")


@torch.no_grad()
def embed_preloaded(dataset, encoder: torch.nn.Module, modality: str, *, batch_size: int = 256,
                    device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> int:
    """Replace every preloaded ``modality`` tensor of ``dataset`` by ``encoder``'s embedding of it; returns how
    many distinct tensors were embedded.

    Samples sharing one preloaded tensor (the same file or text) share its embedding too. The encoder runs in
    eval mode, as a frozen tower does in training; embeddings are stored as float32 on the CPU.
    """
    cache = dataset.cache
    if cache is None:
        raise ValueError(f"cache_frozen: the dataset was not preloaded, so there is no {modality} tensor to embed")
    device = torch.device(device)
    distinct: dict[int, torch.Tensor] = {}
    for (_, m), x in cache.items():
        if m == modality:
            distinct.setdefault(id(x), x)
    keys = list(distinct)
    collate = get_modality(modality).collate_fn
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    was_training = encoder.training
    encoder.eval()
    rows: dict[int, torch.Tensor] = {}
    try:
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            with amp:
                z = encoder(collate([distinct[k] for k in chunk]).to(device))
            z = z.float().cpu()
            rows.update(zip(chunk, z.unbind(0)))
    finally:
        encoder.train(was_training)
    dataset.use_embeddings(modality, {k: rows[id(x)] for k, x in cache.items() if k[1] == modality})
    return len(keys)


def cache_frozen_towers(model, dataset, frozen: Sequence[str], used: Sequence[str], *,
                        device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
                        batch_size: int = 256) -> list[str]:
    """Embed the preloaded inputs of every frozen modality in ``used`` (those of a trained pair); returns them."""
    cached = [m for m in used if m in frozen]
    for m in cached:
        t0 = time.perf_counter()
        enc = model.encoders[m].to(device)
        n = embed_preloaded(dataset, enc, m, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
        log.info("cache_frozen: embedded %d distinct %s inputs with the frozen tower once (%.1f s)", n, m,
                 time.perf_counter() - t0)
    return cached
