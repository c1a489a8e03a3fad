"""Data loading: files -> batches per modality (read + transform + collate) with 0, 1 and N DataLoader workers.

The files are a generated world (:func:`anybind.data.world.generate_world`: PNG images, WAV audio, MP4 video,
``.npy`` point clouds and ``.txt`` captions, one object per sample), cached under ``--workdir``. Every modality
goes through anybind's own :class:`~anybind.data.dataset.ManifestDataset` and its collate function, with the
input contracts of a training preset's towers (``default``: the tiny towers at their own input sizes, 224 px
images, 3 x 2 s audio clips, 5 video clips, 1024 points; ``world``: ``experiment=world``'s small inputs).
The row ``all`` loads every modality of a sample, as training does.

Each rate is steady-state: samples after the first batch / time after the first batch (worker start-up is
reported apart). To say whether loading can stall training, the suite also times the training step of the
same preset (synthetic batches, all five modalities bound) and reports loader samples/s / step samples/s.

``sources`` adds ``shards``: the same samples sharded with ``anybind-shard`` and streamed as ``data=shards``
does (:mod:`anybind.bench.data_shards`), measured the same way beside the loose files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .common import MODALITIES, load, sig

DEFAULT_BATCH = 32  # data.batch_size of the shipped data configs


def bench_world(root: str | Path, n: int, *, num_workers: int = 2):
    """A small generated world with real files of every modality (reused when already there)."""
    from ..data.world import generate_world

    return generate_world(Path(root), n_train=n, n_val=0, n_test=0, n_heldout=0, text_files=True,
                          num_workers=num_workers, progress=False)


def preset_contracts(preset: str, modalities=MODALITIES, model_size: str = "tiny") -> dict[str, dict]:
    """The input contracts of a training preset's towers (built on the meta device: no weights allocated)."""
    from ..train.builders import build_model
    from ..train.recipe import compose_train_config
    from .train import preset_overrides

    cfg = compose_train_config(preset_overrides(preset, list(modalities), model_size) + ["data.manifest=unused"])
    with torch.device("meta"):
        model = build_model(cfg)
    return {m: model.input_contract(m) for m in modalities}


def loader_rate(manifest, contracts: dict[str, dict], *, batch_size: int, num_workers: int,
                preload: bool = False) -> dict:
    """Samples/s from files (or preloaded tensors) to collated batches through anybind's Dataset + DataLoader."""
    from torch.utils.data import DataLoader

    from ..data.dataset import ManifestDataset, worker_init

    ds = ManifestDataset(manifest, contracts)
    preload_s = None
    if preload:
        t0 = time.perf_counter()
        ds.preload(num_workers=num_workers)
        preload_s = time.perf_counter() - t0
        num_workers = 0  # as the recipe does: everything is in memory, collation is all that is left
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=True, collate_fn=ds.collate,
                        num_workers=num_workers, worker_init_fn=worker_init if num_workers else None,
                        prefetch_factor=2 if num_workers else None)
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
        raise ValueError(f"{len(manifest)} samples give fewer than two batches of {batch_size}: nothing to time "
                         "after the first batch (use more samples or a smaller batch)")
    return {"source": "files", "num_workers": num_workers, "preload": preload, "batch_size": batch_size,
            "samples_timed": samples,
            "first_batch_s": round(t1 - t0, 3), "preload_s": round(preload_s, 2) if preload_s is not None else None,
            "samples_per_s": sig(samples / (t2 - t1)), "ms_per_sample": sig(1000 * (t2 - t1) / samples),
            "errors": errors, "load": load()}


def run_suite(*, workdir: Path, presets: list[str], modalities: list[str], n: int = 128,
              workers: list[int] | None = None, batch_size: int = DEFAULT_BATCH, step: bool = True,
              step_batch: dict[str, int] | None = None, step_steps: int = 2, model_size: str = "tiny",
              device: str = "cpu", sources=("files",), log=print) -> dict:
    from ..data.manifest import load_manifest
    from .data_shards import SHARD_SAMPLES, bench_shards, shard_loader_rate

    workers = workers if workers is not None else sorted({0, 1, max(2, os.cpu_count() or 1)})
    t0 = time.perf_counter()
    info = bench_world(Path(workdir) / f"world-{n}", n)
    log(f"world of {n} samples at {info.root} ({'reused' if info.reused else 'generated'} in "
        f"{time.perf_counter() - t0:.1f} s)")
    manifest = load_manifest(info.manifests["train"])
    shards = None
    if "shards" in sources:
        per_shard = max(1, min(SHARD_SAMPLES, n // 4))  # at least 4 shards: 2 ranks x 2 workers would all get one
        shards = bench_shards(info.manifests["train"], Path(workdir) / f"world-{n}-shards-{per_shard}",
                              max_count=per_shard)
        how = "reused" if shards["reused"] else f"written in {shards['seconds']} s"
        log(f"{shards['shards']} shards of {shards['samples']} samples, {shards['bytes'] / 2**20:.1f} MiB at "
            f"{shards['folder']} ({how})")
    rows, steps = [], []
    for preset in presets:
        contracts = preset_contracts(preset, MODALITIES, model_size)
        groups = [[m] for m in modalities] + ([list(modalities)] if len(modalities) > 1 else [])
        for group in groups:
            sub = {m: contracts[m] for m in group}
            label = group[0] if len(group) == 1 else "all"
            for source in sources:
                for w in workers:
                    if source == "shards":
                        r = shard_loader_rate(shards["folder"], sub, batch_size=batch_size, num_workers=w)
                    else:
                        r = loader_rate(manifest, sub, batch_size=batch_size, num_workers=w)
                    rows.append({"preset": preset, "modality": label, **r})
                    log(f"[{preset}] {label} {source} workers={w}: {r['samples_per_s']} samples/s (load {r['load']})")
            if label == "all" and preset == "world":  # the world preset trains with data.preload=true
                r = loader_rate(manifest, sub, batch_size=batch_size, num_workers=max(workers), preload=True)
                rows.append({"preset": preset, "modality": label, **r})
                log(f"[{preset}] {label} preloaded: {r['samples_per_s']} samples/s after {r['preload_s']} s preload")
        if step and "image" in modalities and len(modalities) > 1:  # the anchor and at least one bound modality
            from .train import synthetic_step

            b = (step_batch or {}).get(preset, batch_size)
            s = synthetic_step(modalities=["image", *(m for m in modalities if m != "image")], preset=preset,
                               model_size=model_size, batch_size=b, steps=step_steps, warmup=1, device=device)
            steps.append(s)
            log(f"[{preset}] training step, batch {b}: {s['samples_per_s']} samples/s (load {s['load']})")
    for r in rows:
        s = next((s for s in steps if s["preset"] == r["preset"]), None)
        if s is not None and r["modality"] == "all":
            r["step_samples_per_s"] = s["samples_per_s"]
            r["loader_over_step"] = sig(r["samples_per_s"] / s["samples_per_s"], 3)
    return {"world": {"root": str(info.root), "samples": n, "params": info.params}, "shards": shards, "rows": rows,
            "steps": steps, "columns": COLUMNS}


COLUMNS = [("preset", "preset"), ("modality", "modality"), ("source", "source"), ("num_workers", "workers"),
           ("preload", "preload"),
           ("batch_size", "batch"), ("samples_per_s", "samples/s"), ("ms_per_sample", "ms/sample"),
           ("first_batch_s", "first batch s"), ("step_samples_per_s", "step samples/s"),
           ("loader_over_step", "loader / step"), ("load", "load")]
