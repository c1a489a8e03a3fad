"""The recipe's builder for streamed data (``data=shards``, ``data.urls=...``, ``data.mixture=[...]``)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from omegaconf import OmegaConf

from .sources import source_from_config
from .stream import ShardStream

log = logging.getLogger("anybind.train")


def is_streamed(data_cfg: Any) -> bool:
    """Whether a run's ``data`` config streams shards / a mixture instead of reading one manifest."""
    return bool(data_cfg.get("shards") or data_cfg.get("urls") or data_cfg.get("mixture"))


def data_sources(data_cfg: Any) -> list:
    d = data_cfg
    if d.get("mixture"):
        if d.get("shards") or d.get("urls"):
            raise ValueError("give data.mixture=[...] or data.shards / data.urls, not both")
        entries = OmegaConf.to_container(d.mixture, resolve=True) if OmegaConf.is_config(d.mixture) else list(d.mixture)
        sources = [source_from_config(e, default_name=f"corpus{i}") for i, e in enumerate(entries)]
        if len({s.name for s in sources}) != len(sources):
            raise ValueError(f"data.mixture: corpus names must differ, got {[s.name for s in sources]} (set name:)")
        return sources
    if not (d.get("shards") or d.get("urls")):
        raise ValueError("data=shards: give data.shards=<folder written by anybind-shard>, data.urls=<WebDataset "
                         "URL pattern> with data.epoch_samples=N, or data.mixture=[...]")
    if d.get("shards") and d.get("urls"):
        raise ValueError("give data.shards=<folder> or data.urls=<pattern>, not both")
    entry = {"shards": d.get("shards"), "urls": d.get("urls"), "samples": d.get("epoch_samples"), "name": d.get("name")}
    return [source_from_config({k: v for k, v in entry.items() if v}, default_name=d.get("name") or "data")]


def build_stream_data(cfg, model, pairs: Sequence, *, rank: int, world: int):
    """``(dataset, sampler, loader)`` as the recipe's ``build_data`` returns; the stream is its own sampler."""
    from torch.utils.data import DataLoader

    from ..dataset import worker_init

    d, e = cfg.data, cfg.eval
    if d.batching != "mixed":
        raise ValueError(f"streamed data supports data.batching=mixed only, got {d.batching!r}")
    if e.enabled and not (e.manifest or d.val_manifest):
        raise ValueError("streamed training evaluates on a manifest: give data.val_manifest=<jsonl> (or "
                         "eval.manifest=...), or eval.enabled=false")
    if d.preload:
        raise ValueError("data.preload=true reads a manifest into memory; it does not apply to streamed shards")
    sources = data_sources(d)
    used = [m for m in model.modalities if any(m in (p.a, p.b) for p in pairs)]
    stream = ShardStream(sources, {m: model.input_contract(m) for m in used}, [(p.a, p.b) for p in pairs],
                         d.batch_size, seed=cfg.trainer.seed, rank=rank, world_size=world,
                         shuffle_buffer=d.shuffle_buffer, resampled=d.resampled, epoch_samples=d.epoch_samples,
                         skip_errors=d.skip_errors,
                         augment={m: OmegaConf.to_container(cfg.modality[m].augment) for m in used if cfg.modality[m].augment})
    workers = d.num_workers
    stream.check_workers(workers)
    pin = d.pin_memory if d.pin_memory is not None else torch.cuda.is_available() and cfg.trainer.device != "cpu"
    # persistent workers would keep the epoch they started with: set_epoch must reach fresh workers every epoch
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin, persistent_workers=False,
                        prefetch_factor=d.prefetch_factor if workers else None,
                        worker_init_fn=worker_init if workers else None,
                        # its own generator: starting workers must not draw from the global RNG (dropout's stream,
                        # which a resumed run restores)
                        generator=torch.Generator().manual_seed(cfg.trainer.seed))
    log.info("data: streaming %s (%d samples per epoch, weights %s), %d batches of %d per epoch per rank",
             ", ".join(f"{s.name}: {len(s.units)} units" for s in sources), stream.samples,
             [round(float(w), 3) for w in stream.weights], len(stream), d.batch_size)
    return stream, stream, loader
