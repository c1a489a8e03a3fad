"""Embedding across processes: each rank embeds its own shards into the same store, then one merge makes it whole.

    torchrun --nproc_per_node=4 -m anybind.retrieval.distributed input=data/m.jsonl out=runs/emb \\
        model.checkpoint=runs/x/checkpoints/last
    sbatch --array=0-15 --wrap "python -m anybind.retrieval.distributed input=... out=... model.checkpoint=..."

The options are ``anybind-embed``'s (``conf/embed.yaml``). Every process plans the same store shards (the plan is
a pure function of the input and ``shard_size``) and embeds those with ``shard_number % world == rank``; shard
names never clash, and each shard is written atomically with its marker last, exactly as in a single process.
So the store is the single-process store, shard for shard, and a killed run resumes per shard.

The merge (``errors.jsonl`` and the index) runs once every planned shard is finished: with torchrun, rank 0 after
a barrier; in a SLURM array (no process group), whichever task finds the plan complete when it ends (a task
that finds shards still missing says how many and leaves the merge to a later one). ``merge_store(out)`` (or
rerunning any one task, which then has nothing left to embed) merges by hand.

Rank and world come from torchrun (``RANK`` / ``WORLD_SIZE``) or SLURM arrays (``SLURM_ARRAY_TASK_ID`` minus
``SLURM_ARRAY_TASK_MIN``, ``SLURM_ARRAY_TASK_COUNT``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..embedding import resolve_workers
from ..io import atomic_write_bytes
from .collection import plan_shards, resolve_items, rows_digest
from .embed import model_info
from .files import jsonl_bytes
from .shards import embed_shards
from .store import EmbeddingStore
from .store_writer import StoreWriter
from .summary import EmbedSummary

log = logging.getLogger("anybind.retrieval")


def rank_and_world(env: dict | None = None) -> tuple[int, int, str]:
    """``(rank, world, launcher)`` with launcher ``torchrun``, ``slurm-array`` or ``single``."""
    env = os.environ if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun"
    if env.get("SLURM_ARRAY_TASK_COUNT") and int(env["SLURM_ARRAY_TASK_COUNT"]) > 1:
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_ID"]) - lo, int(env["SLURM_ARRAY_TASK_COUNT"]), "slurm-array"
    return 0, 1, "single"


def _plan(model, source, modality, modalities, split, shard_size):
    items, ignored = resolve_items(source, modality, modalities, split)
    if modalities is not None:
        wanted = set(modalities)
        items = [it for it in items if it["modality"] in wanted]
    items = [it for it in items if it["modality"] in model.modalities]
    plan = plan_shards(items, shard_size)
    return [(name, m, rows, rows_digest(rows)) for name, m, rows in plan], ignored


@torch.no_grad()
def embed_slice(model, source: str | Path | Sequence[Any], out_dir: str | Path, *, rank: int, world: int,
                modality: str | None = None, modalities: Iterable[str] | None = None, split: str | None = None,
                shard_size: int = 4096, batch_size: int = 64, num_workers: int | str = 0, dtype: str = "float32",
                progress: bool = True, checkpoint: str | Path | None = None) -> tuple[EmbedSummary, list[str]]:
    """Embed this rank's shards of the plan into ``out_dir``; returns (what it did, every planned shard name)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    num_workers = resolve_workers(num_workers, model.device)
    t0 = time.perf_counter()
    plan, ignored = _plan(model, source, modality, None if modalities is None else list(modalities), split, shard_size)
    writer = StoreWriter(out_dir, model.embed_dim, dtype=dtype, model=model_info(model, checkpoint), shared=True)
    summary = EmbedSummary(store=None, planned=sum(len(p[2]) for p in plan[rank::world]), ignored=ignored)  # type: ignore[arg-type]
    pending = []
    for name, m, rows, digest in plan[rank::world]:
        if writer.finished(name, digest):
            summary.shards_reused += 1
            summary.reused += len(rows)
        else:
            pending.append((name, m, rows, digest))
    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=summary.planned, initial=summary.reused, desc=f"embed rank {rank}/{world}", unit="item")
    was_training = model.training
    model.eval()
    try:
        for m in dict.fromkeys(p[1] for p in pending):
            embed_shards(model, m, [p for p in pending if p[1] == m], writer, summary, batch_size, num_workers, bar)
    finally:
        model.train(was_training)
        writer.close()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary, [p[0] for p in plan]


def missing_shards(out_dir: str | Path, names: Sequence[str]) -> list[str]:
    shards = Path(out_dir) / "shards"
    return [n for n in names if not (shards / f"{n}.done.json").exists()]


def merge_store(out_dir: str | Path, names: Sequence[str] | None = None) -> EmbeddingStore:
    """Make the store whole once every planned shard is finished: verify them, write ``errors.jsonl``."""
    if names is not None:
        missing = missing_shards(out_dir, names)
        if missing:
            raise RuntimeError(f"store {out_dir}: {len(missing)} planned shards are not finished yet ({missing[:5]})")
    store = EmbeddingStore.open(out_dir, verify=True)
    atomic_write_bytes(Path(out_dir) / "errors.jsonl", jsonl_bytes(store.errors))
    return store


def run_distributed_embed(cfg, env: dict | None = None) -> dict:
    """``conf/embed.yaml`` options, this process's slice; the merge and index where the plan completes."""
    from .jobs import load_model
    from .config import to_plain

    c = to_plain(cfg)
    rank, world, launcher = rank_and_world(env)
    started = False
    if launcher == "torchrun" and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
        started = True
    try:
        m = c.get("model") or {}
        model = load_model(m.get("checkpoint"), m.get("encoders"), m.get("device", "cpu"))
        if c.get("overwrite"):
            if launcher == "slurm-array":
                raise ValueError("overwrite=true cannot be used from a SLURM array (tasks start at different times); "
                                 "remove the store folder first")
            if rank == 0:  # one process clears the store, the others wait for it
                StoreWriter(c["out"], model.embed_dim, dtype=c.get("dtype", "float32"),
                            model=model_info(model, m.get("checkpoint")), overwrite=True).close()
            if world > 1:
                torch.distributed.barrier()
        summary, names = embed_slice(
            model, c["input"], c["out"], rank=rank, world=world, modality=c.get("as_modality"),
            modalities=c.get("modalities"), split=c.get("split"), shard_size=c.get("shard_size", 4096),
            batch_size=c.get("batch_size", 64), num_workers=c.get("num_workers", "auto"), dtype=c.get("dtype", "float32"),
            progress=c.get("progress", True), checkpoint=m.get("checkpoint"))
        log.info("rank %d/%d: embedded %d items in %d shards (%d reused, %d failed)", rank, world, summary.embedded,
                 summary.shards_written, summary.shards_reused, summary.failed)
        if launcher == "torchrun":
            torch.distributed.barrier()
        result = {"rank": rank, "world": world, "embedded": summary.embedded, "merged": False}
        missing = missing_shards(c["out"], names)
        if rank != 0 and launcher == "torchrun":
            return result
        if missing:
            print(f"rank {rank}: {len(missing)} of {len(names)} store shards are not finished yet; the task that "
                  f"finishes last merges the store")
            return result
        store = merge_store(c["out"], names)
        result.update(merged=True, vectors=len(store), failed=len(store.errors))
        print(f"store {store.path}: {len(store)} vectors from {world} processes, {len(store.errors)} inputs failed")
        ix = c.get("index") or {}
        if ix.get("build", True) and len(store):
            from .index import build_index

            index = build_index(store, kind=ix.get("kind", "auto"), memory_budget=ix.get("memory_budget"),
                                threads=ix.get("threads"))
            out = Path(ix.get("out") or Path(c["out"]) / "index")
            index.save(out)
            result["index"] = str(out)
        return result
    finally:
        if started:
            torch.distributed.destroy_process_group()


def main() -> None:
    from .jobs import hydra_main

    hydra_main("embed", lambda cfg, _: run_distributed_embed(cfg))


if __name__ == "__main__":
    main()
