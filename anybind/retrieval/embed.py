"""Embed a collection (manifest, folder or item list) with a model into an embedding store (:mod:`.store`).

Items (:mod:`.collection`) are planned into single-modality shards of ``shard_size`` items, in a stable order, so
that a resumed run recognises finished shards (their marker records a digest of the planned inputs) and embeds only
the rest. Bad inputs are skipped, counted and listed (``errors.jsonl``), never fatal.

Work is kept as it goes (:mod:`.shards`): a shard still being embedded is written out as a *part* every
``flush_seconds`` and when the run is interrupted (Ctrl-C; SIGTERM in ``anybind-embed``), and a resumed run
continues after the last part. A shard finished in one go is written whole. What the run did is an
:class:`~anybind.retrieval.summary.EmbedSummary`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..embedding import auto_workers, available_cores, resolve_precision, resolve_workers  # noqa: F401 (auto_workers)
from ..errors import Interrupted
from .collection import SIDECAR_REASON, items_from_folder, plan_shards, resolve_items, rows_digest  # noqa: F401
from .shards import count_reused, embed_shards, finished_prefix
from .store_writer import StoreWriter
from .summary import EmbedSummary

log = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = 30.0


def model_info(model, checkpoint: str | Path | None = None) -> dict:
    """How a store or index records the model that made its vectors."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    info: dict[str, Any] = {"embed_dim": model.embed_dim,
                            "encoders": {m: s["name"] for m, s in model.encoder_spec().items()}}
    if checkpoint is not None:
        info["checkpoint"] = str(Path(checkpoint).resolve())
    if meta.get("sha256"):
        info["sha256"] = meta["sha256"]
    return info


@torch.no_grad()
def embed_to_store(
    model,
    source: str | Path | Sequence[Any],
    out_dir: str | Path,
    *,
    modality: str | None = None,
    modalities: Iterable[str] | None = None,
    split: str | None = None,
    shard_size: int = 4096,
    batch_size: int = 64,
    num_workers: int | str | None = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    root_only: bool = False,
    flush_seconds: float | None = DEFAULT_FLUSH_SECONDS,
    text_sidecars: bool = False,
    precision: str = "fp32",
) -> EmbedSummary:
    """Embed ``source`` (a manifest file, a folder, or a list of items) into a store at ``out_dir``; resumable.

    An item is a path or a dict ``{"source": path|text|tensor, "modality"?, "id"?, ...extra}``; extra keys are
    kept in the row metadata. ``modality`` forces the modality of a folder's files / plain items (default: from
    the extension). Items of modalities the model has no tower for are ignored and counted. ``root_only``
    refuses manifest paths (or folder symlinks) that lead outside the manifest's (or folder's) own folder.
    ``num_workers="auto"`` picks the DataLoader workers from the machine (:func:`~anybind.embedding.auto_workers`).
    ``flush_seconds``: write what a shard has so far at least this often (``None``: only whole shards).
    ``precision``: ``fp32`` (exactly ``model.embed``), ``bf16`` (the towers under bfloat16 autocast: on a CPU with
    AMX several times faster, vectors within about 1e-3 of float32 ones), ``fp16`` or ``auto``
    (:func:`~anybind.embedding.resolve_precision`).

    Ctrl-C (any :class:`KeyboardInterrupt`) writes what the current shard has, then raises
    :class:`anybind.errors.Interrupted` whose ``summary`` says what the store holds; rerunning resumes.
    """
    t0 = time.perf_counter()
    items, ignored = resolve_items(source, modality, modalities, split, root_only, text_sidecars)
    if modalities is not None:
        wanted = set(modalities)
        dropped = sum(it["modality"] not in wanted for it in items)
        items = [it for it in items if it["modality"] in wanted]
        if dropped:
            ignored["items of modalities not asked for"] = dropped
    missing = sorted({it["modality"] for it in items} - set(model.modalities))
    if missing:
        n = sum(it["modality"] in missing for it in items)
        log.warning("model has no tower for %s; %d items ignored", missing, n)
        ignored[f"items of modalities the model lacks ({', '.join(missing)})"] = n
        items = [it for it in items if it["modality"] not in missing]
    workers = resolve_workers(num_workers, model.device)
    precision = resolve_precision(precision, model.device)

    writer = StoreWriter(out_dir, model.embed_dim, dtype=dtype, model=model_info(model, checkpoint), overwrite=overwrite)
    summary = EmbedSummary(store=None, planned=len(items), ignored=ignored, precision=precision,  # type: ignore[arg-type]
                           workers=workers)
    pending = []
    for name, m, rows in plan_shards(items, shard_size):
        digest = rows_digest(rows)
        if writer.finished(name, digest):
            count_reused(summary, writer, [name])
            continue
        start, parts = finished_prefix(writer, name, rows)
        if parts:
            count_reused(summary, writer, parts)
        pending.append((name, m, rows, digest, start))

    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=summary.done, desc="embed", unit="item")
    was_training = model.training
    model.eval()
    threads = tower_threads = torch.get_num_threads()
    if workers and model.device.type == "cpu":  # the workers' cores are not the tower's
        tower_threads = max(1, min(threads, available_cores() - workers))
    interrupted: KeyboardInterrupt | None = None
    try:
        for m in dict.fromkeys(p[1] for p in pending):
            torch.set_num_threads(tower_threads)  # the most a tower may use; each batch's count is measured
            embed_shards(model, m, [p for p in pending if p[1] == m], writer, summary, batch_size, workers, bar,
                         flush_seconds=flush_seconds, precision=precision)
    except KeyboardInterrupt as exc:  # the current shard's rows so far were written as a part
        interrupted = exc
    except BaseException:
        writer.close()  # finished shards stay; the folder is free for the resuming run
        raise
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
        if bar is not None:
            bar.close()
    summary.store = writer.finalize()
    summary.seconds = time.perf_counter() - t0
    if interrupted is not None:
        summary.interrupted = True
        status = getattr(interrupted, "status", 130)
        raise Interrupted(f"stopped: {summary.done} of {summary.planned} inputs are done and kept in {summary.store.path}",
                          status=status, summary=summary) from None
    return summary
