"""Embedding planned shards into a store: one DataLoader per modality, written whole or in parts, resumable.

A shard still being embedded is written out as a *part* (``<shard>.<first row>``, a shard of its own) every
``flush_seconds`` and when the run is interrupted, and a resumed run continues after the last part
(:func:`finished_prefix`). A shard finished in one go is written whole. The towers run through the one embedding
loop, :func:`anybind.embedding.encode_batches`.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from ..data.dataset import ItemDataset
from ..embedding import ThreadChooser, encode_batches, make_loader
from ..errors import CheckpointError
from .collection import rows_digest, source_name
from .store import load_shard
from .store_writer import StoreWriter
from .summary import EmbedSummary

log = logging.getLogger(__name__)


def count_reused(summary: EmbedSummary, writer: StoreWriter, shards) -> None:
    """Count finished shards (names or :class:`~anybind.retrieval.store.Shard` objects) as reused in ``summary``."""
    for s in shards:
        shard = load_shard(writer.marker_path(s)) if isinstance(s, str) else s
        summary.shards_reused += 1
        summary.reused += shard.count
        summary.reused_failed += len(shard.errors)


def part_name(name: str, start: int) -> str:
    """The name of the part of planned shard ``name`` that begins at row ``start``."""
    return f"{name}.{start:06d}"


def finished_prefix(writer: StoreWriter, name: str, rows: Sequence[dict]):
    """How many leading rows of planned shard ``name`` earlier runs finished as parts, and those parts."""
    start, kept = 0, []
    for part in writer.shard_parts(name):
        planned = int(part.marker.get("planned", part.count))
        if part.name != part_name(name, start):
            break  # a gap: what follows is embedded again
        digest = rows_digest(rows[start:start + planned])
        if start + planned > len(rows) or part.marker.get("inputs_sha256") not in (None, digest):
            raise CheckpointError(f"store {writer.path} shard part {part.name} was embedded from other inputs than "
                                  "this run plans; use a new output folder or overwrite=True")
        try:
            part.verify()
        except CheckpointError as exc:
            log.warning("%s; the rest of shard %s will be embedded again", exc, name)
            break
        kept.append(part)
        start += planned
    for part in writer.shard_parts(name)[len(kept):]:  # parts after a gap or a damaged one: redone
        writer.remove_shard(part.name)
    return start, kept


def embed_shards(model, m, shards, writer: StoreWriter, summary: EmbedSummary, batch_size, num_workers, bar, *,
                 flush_seconds: float | None = None, precision: str = "fp32") -> None:
    """Embed every pending shard of modality ``m`` through a single DataLoader (batches never span two shards).

    ``shards`` are ``(name, modality, rows, digest[, first row to embed])``. A shard embedded from its first row in
    one go is written whole; otherwise (a time flush after ``flush_seconds``, a resumed part, an interruption) its
    rows are written as parts. A :class:`KeyboardInterrupt` writes the rows done so far, then propagates.
    ``precision``: ``fp32``, ``bf16`` or ``fp16`` (the tower's autocast).
    """
    shards = [(s[0], s[1], s[2], s[3], s[4] if len(s) > 4 else 0) for s in shards]
    rows = [r for _, _, shard_rows, _, start in shards for r in shard_rows[start:]]
    if not rows:
        return
    sources = [r["source"] for r in rows]
    ds = ItemDataset(m, sources, model.input_contract(m), skip_errors=True, timed=True)
    batches, bounds, safe, at = [], [], set(), 0
    for _, _, shard_rows, _, start in shards:
        end = at + len(shard_rows) - start
        shard_batches, shard_safe = plan_batches(sources, at, end, batch_size, by_length=m == "text")
        batches += shard_batches
        safe |= shard_safe
        bounds.append((at, end))
        at = end
    encoder, device = model.encoders[m], model.device
    loader = make_loader(ds, collate_fn=ds.collate, batch_sampler=batches, num_workers=num_workers, device=device)
    reading = iter(loader)
    tagged = (((idx, errs, seconds), batch) for idx, batch, errs, seconds in reading)
    chooser = ThreadChooser(torch.get_num_threads()) if device.type == "cpu" and torch.get_num_threads() > 1 else None
    it = encode_batches(encoder, tagged, device=device, autocast=precision, timing=summary.timing, threads=chooser)
    try:
        _embed_pending(model, m, shards, bounds, rows, safe, writer, summary, bar, it, flush_seconds)
    finally:
        # Stop the workers now: an interruption's traceback keeps this frame, and with it the loader's
        # iterator, alive until the process exits, where joining a worker that still holds a batch hangs.
        it.close()
        stop = getattr(reading, "_shutdown_workers", None)
        if stop is not None:
            stop()


def _embed_pending(model, m, shards, bounds, rows, safe, writer: StoreWriter, summary: EmbedSummary, bar, it,
                   flush_seconds: float | None) -> None:
    for (name, _, shard_rows, digest, start), (lo, hi) in zip(shards, bounds):
        vecs = np.empty((hi - lo, model.embed_dim), dtype=np.float32)
        ok = np.zeros(hi - lo, dtype=bool)
        errors: list[tuple[int, dict]] = []
        done = flushed = kept = 0  # rows of this shard handled / already written as parts / all finished
        last_flush = time.monotonic()

        def write(upto: int, whole: bool) -> None:
            nonlocal flushed, last_flush
            keep = np.flatnonzero(ok[flushed:upto]) + flushed
            meta = [row_meta(shard_rows[start + j]) for j in keep]
            errs = [e for j, e in errors if flushed <= j < upto]
            if whole:
                for part in writer.shard_parts(name):  # a whole shard replaces stale parts of the same rows
                    writer.remove_shard(part.name)
            part = name if whole else part_name(name, start + flushed)
            part_digest = digest if whole else rows_digest(shard_rows[start + flushed:start + upto])
            writer.write_shard(part, m, vecs[keep], meta, errors=errs, planned=upto - flushed,
                               inputs_sha256=part_digest)
            summary.shards_written += 1
            summary.embedded += len(keep)
            summary.embedded_by_modality[m] = summary.embedded_by_modality.get(m, 0) + len(keep)
            summary.failed += len(errs)
            flushed, last_flush = upto, time.monotonic()

        try:
            while done < hi - lo:
                (idx, errs, seconds), z = next(it)
                for key, value in seconds.items():
                    summary.timing[key] = summary.timing.get(key, 0.0) + value
                for i, msg in errs:
                    r = rows[i]
                    errors.append((i - lo, {"id": r["id"], "modality": m, "source": source_name(r["source"]),
                                            "error": msg}))
                if z is not None:
                    vecs[idx.numpy() - lo] = z.numpy()
                    ok[idx.numpy() - lo] = True
                done += len(idx) + len(errs)
                if lo + done in safe:  # batches arrive in order: at a safe point rows [0, done) are finished
                    kept = done
                if bar is not None:
                    bar.update(len(idx) + len(errs))
                if (flush_seconds is not None and kept == done < hi - lo
                        and time.monotonic() - last_flush >= flush_seconds):
                    write(done, whole=False)
        except KeyboardInterrupt:
            if kept > flushed:  # rows past the last safe point are embedded again by the resuming run
                write(kept, whole=False)
            raise
        write(done, whole=(start == 0 and flushed == 0))


SORT_WINDOW = 16  # batches of texts ordered by length together


def plan_batches(sources: Sequence, lo: int, hi: int, batch_size: int, *, by_length: bool = False,
                 window: int | None = None) -> tuple[list[list[int]], set[int]]:
    """The batches of rows ``[lo, hi)`` and the *safe points*: row counts ``e`` after whose batch every row
    below ``e`` is finished (where a part may be written).

    In order by default, each batch a safe point. ``by_length`` (texts): the rows of each run of ``window``
    batches are ordered by the length of their text, so a batch holds texts of similar length and the text tower,
    which stops at the batch's longest text, pads less (real captions: about 1.5x faster); only the end of each
    run is a safe point (``window``: :data:`SORT_WINDOW` batches). Rows land in the store by their index, so the
    order of the store is unchanged; a part (a time flush, Ctrl-C) holds whole runs.
    """
    window = SORT_WINDOW if window is None else window
    order = list(range(lo, hi))
    span = batch_size * (window if by_length and all(isinstance(sources[i], str) for i in order) else 1)
    batches, safe = [], set()
    for w in range(lo, hi, span):
        rows = order[w - lo:w - lo + span]
        if span > batch_size:
            rows.sort(key=lambda i: len(sources[i]))
        batches += [rows[k:k + batch_size] for k in range(0, len(rows), batch_size)]
        safe.add(min(w + span, hi))
    return batches, safe


def row_meta(row: dict) -> dict:
    """The metadata a store keeps for an item: everything but the input itself, which becomes its name."""
    return {**{k: v for k, v in row.items() if k != "source"}, "source": source_name(row["source"])}
