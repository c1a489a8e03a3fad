"""Data loading from WebDataset shards: the samples of :mod:`anybind.bench.data`'s world, sharded with
``anybind-shard`` (:func:`anybind.data.shards.write_shards`) and streamed as ``data=shards`` trains on them
(:class:`~anybind.data.shards.stream.ShardStream` in a DataLoader, decoding in the workers).

The rates are measured as for loose files (steady state: samples after the first batch / time after the first
batch) so the two can be set side by side per modality and worker count. The stream runs ``passes`` times over
the shards within one epoch (``epoch_samples = passes x samples``), so a run times more than a handful of batches
without restarting the workers.
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import load, sig

SHARD_SAMPLES = 16  # samples per shard: the 128-sample world gives 8 shards, enough for 2 ranks x 2 workers


def bench_shards(manifest_path: str | Path, out: str | Path, *, max_count: int = SHARD_SAMPLES) -> dict:
    """Shard the world's manifest into ``out`` (reused when complete); -> the index plus the seconds it took."""
    from ..data.shards import write_shards

    out = Path(out)
    reused = (out / "shards.json").is_file()
    t0 = time.perf_counter()
    index = write_shards(manifest_path, out, max_count=max_count, progress=False)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.glob("shard-*.tar"))
    return {"folder": str(out), "shards": len(index["shards"]), "samples": index["samples"], "bytes": size,
            "seconds": None if reused else round(seconds, 2), "reused": reused}


def shard_loader_rate(folder: str | Path, contracts: dict[str, dict], *, batch_size: int, num_workers: int,
                      passes: int = 2, shuffle_buffer: int = 1000, seed: int = 0) -> dict:
    """Samples/s from shard tars to collated batches through ``ShardStream`` and a DataLoader (as training does)."""
    from torch.utils.data import DataLoader

    from ..data.dataset import worker_init
    from ..data.shards.sources import source_from_config
    from ..data.shards.stream import ShardStream

    source = source_from_config({"shards": str(folder)})
    mods = list(contracts)
    # one modality: a self-pair makes every sample with it usable; several: each bound to the first, as training
    pairs = [(mods[0], mods[0])] if len(mods) == 1 else [(mods[0], m) for m in mods[1:]]
    stream = ShardStream([source], contracts, pairs, batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
                         epoch_samples=passes * source.samples)
    stream.check_workers(num_workers)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers,
                        worker_init_fn=worker_init if num_workers else None,
                        prefetch_factor=2 if num_workers else None, persistent_workers=False)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t1 = time.perf_counter()
    samples, errors = 0, len(first["errors"])
    for batch in it:
        samples += len(batch["ids"])
        errors += len(batch["errors"])
    t2 = time.perf_counter()
    del it
    if samples == 0:
        raise ValueError(f"{folder}: {len(stream)} batches of {batch_size}: nothing to time after the first batch")
    return {"source": "shards", "num_workers": num_workers, "preload": False, "batch_size": batch_size,
            "samples_timed": samples, "first_batch_s": round(t1 - t0, 3), "preload_s": None,
            "samples_per_s": sig(samples / (t2 - t1)), "ms_per_sample": sig(1000 * (t2 - t1) / samples),
            "errors": errors, "load": load()}
