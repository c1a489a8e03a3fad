"""Embed a collection (manifest, folder or item list) with a model into an :class:`EmbeddingStore`.

Items are planned into single-modality shards of ``shard_size`` items, in a stable order, so that a resumed run
recognises finished shards (their marker records a digest of the planned inputs) and embeds only the rest.
Bad inputs are skipped, counted and listed (``errors.jsonl``), never fatal.

Work is kept as it goes: a shard still being embedded is written out as a *part* (``<shard>.<first row>``, a shard
of its own) every ``flush_seconds`` and when the run is interrupted (Ctrl-C; SIGTERM in ``anybind-embed``), and a
resumed run continues after the last part. A shard finished in one go is written whole, as before.

Folders: every file whose extension a modality claims is an item, except *sidecars*: a ``.txt`` file beside a
media file of the same name (``clip.ogg`` + ``clip.txt`` or ``clip.ogg.txt``: an attribution, a transcript, a
caption) describes that file and is skipped unless ``text_sidecars=True``. Hidden files and folders are skipped.
What was skipped, and why, is counted in :attr:`EmbedSummary.ignored`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import InputError, Interrupted
from ..modality import get_modality, list_modalities, modality_for_path
from ..model import ItemDataset
from .store import EmbeddingStore, StoreWriter, inputs_digest

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".json")
SIDECAR_SUFFIX = ".txt"
SIDECAR_REASON = "sidecar .txt files beside media of the same name (text_sidecars=true embeds them)"
DEFAULT_FLUSH_SECONDS = 30.0


@dataclass
class EmbedSummary:
    """What one :func:`embed_to_store` run did, and what the store holds after it."""

    store: EmbeddingStore
    planned: int = 0
    embedded: int = 0
    failed: int = 0
    reused: int = 0  # vectors of shards (and parts) finished by an earlier run
    reused_failed: int = 0  # inputs those shards had recorded as failed
    shards_written: int = 0
    shards_reused: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    embedded_by_modality: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # seconds in read / transform / tower (all processes)
    interrupted: bool = False
    precision: str = "fp32"
    workers: int = 0

    @property
    def errors(self) -> list[dict]:
        return self.store.errors

    @property
    def done(self) -> int:
        """Planned inputs that are finished (embedded or recorded as failed), by this run or an earlier one."""
        return self.embedded + self.failed + self.reused + self.reused_failed

    def shares(self) -> dict[str, float]:
        """The share of time in reading (decoding) files, transforming them and running the tower."""
        total = sum(self.timing.get(k, 0.0) for k in ("read", "transform", "tower"))
        return {k: self.timing.get(k, 0.0) / total for k in ("read", "transform", "tower")} if total > 0 else {}

    def describe(self) -> str:
        store = self.store
        counts = store.modality_counts()
        errs = self.errors
        lines = [f"store {store.path}: {_n(len(store), 'vector')} in {_n(len(store.shards), 'shard')} "
                 f"({', '.join(f'{m} {n}' for m, n in counts.items()) or 'empty'}), "
                 f"{_n(len(errs), 'input')} failed"]
        by_mod = ", ".join(f"{m} {n}" for m, n in self.embedded_by_modality.items() if n) or "nothing"
        rate = f", {self.embedded / self.seconds:.0f} items/s" if self.seconds > 0 and self.embedded else ""
        shares = self.shares()
        where = (" (" + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + " of the work)") if shares else ""
        lines.append(f"this run: embedded {by_mod} ({_n(self.embedded, 'item')}, {self.failed} failed) in "
                     f"{_n(self.shards_written, 'shard')}, {self.seconds:.1f} s{rate}{where}; {self.precision}, "
                     f"{_n(self.workers, 'worker')}")
        if self.shards_reused:
            lines.append(f"reused from an earlier run: {_n(self.shards_reused, 'finished shard')} "
                         f"({_n(self.reused, 'vector')}, {_n(self.reused_failed, 'failed input')})")
        if self.ignored:
            lines.append("skipped: " + "; ".join(f"{n} {why}" for why, n in self.ignored.items()))  # why: plural
        if errs:
            lines.append(f"{_n(len(errs), 'input')} could not be embedded (listed in {store.path / 'errors.jsonl'}):")
            lines += [f"  {e['error']}" for e in errs[:10]]
            if len(errs) > 10:
                lines.append(f"  ... and {len(errs) - 10} more")
        return "\n".join(lines)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _suffix_counts(paths: Iterable[Path]) -> str:
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.suffix.lower() or "(none)"] = counts.get(p.suffix.lower() or "(none)", 0) + 1
    return ", ".join(f"{s} {n}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _media_suffixes() -> set[str]:
    """Suffixes of every modality that is not text (what a sidecar ``.txt`` can describe)."""
    out: set[str] = set()
    for m in list_modalities():
        spec = get_modality(m)
        if not spec.text_like:
            out.update(spec.extensions)
    return out


def is_sidecar(path: Path, siblings: set[str], media: set[str]) -> bool:
    """Whether ``path`` is a ``.txt`` file describing a media file beside it: ``X.txt`` next to ``X.<media ext>``,
    or ``X.<media ext>.txt`` next to ``X.<media ext>`` (``siblings``: the file names in its folder)."""
    if path.suffix.lower() != SIDECAR_SUFFIX:
        return False
    stem = path.name[: -len(path.suffix)]
    if Path(stem).suffix.lower() in media and stem in siblings:
        return True
    return any(f"{stem}{ext}" in siblings or f"{stem}{ext.upper()}" in siblings for ext in media)


def items_from_folder(folder: str | Path, modality: str | None = None, *, recursive: bool = True,
                      root_only: bool = False, text_sidecars: bool = False) -> tuple[list[dict], dict]:
    """Every file under ``folder`` as an item; the modality comes from the extension unless given.

    Returns ``(items, ignored)``: ``ignored`` counts the files left out, by reason (sidecar ``.txt`` files beside
    media of the same name, unless ``text_sidecars``; files no modality claims; with ``modality`` given, files that
    modality cannot read). The id of an item is its path relative to ``folder``. ``root_only`` refuses a symlink
    leading outside it. Hidden files and folders (``.name``) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    by_dir: dict[Path, set[str]] = {}
    for p in files:
        by_dir.setdefault(p.parent, set()).add(p.name)
    forced = get_modality(modality) if modality is not None else None
    media = _media_suffixes()
    items, sidecars, unknown, unreadable = [], 0, [], []
    for p in files:
        if root_only:
            from ..data.manifest import check_inside

            check_inside(folder, p.relative_to(folder).as_posix(), modality=modality or "input", where=p)
        if forced is not None:
            if forced.readable_extensions and p.suffix.lower() not in forced.readable_extensions:
                if not text_sidecars and not forced.text_like and is_sidecar(p, by_dir[p.parent], media):
                    sidecars += 1
                else:
                    unreadable.append(p)
                continue
            m = forced.name
        else:
            try:
                m = modality_for_path(p)
            except InputError:
                unknown.append(p)
                continue
            if m == "text" and not text_sidecars and is_sidecar(p, by_dir[p.parent], media):
                sidecars += 1
                continue
        items.append({"id": p.relative_to(folder).as_posix(), "modality": m, "source": str(p)})
    ignored: dict[str, int] = {}
    if sidecars:
        ignored[SIDECAR_REASON] = sidecars
    if unknown:
        ignored[f"files of no known modality ({_suffix_counts(unknown)})"] = len(unknown)
    if unreadable:
        ignored[f"files that are not {modality} ({_suffix_counts(unreadable)})"] = len(unreadable)
    return items, ignored


def items_from_manifest(path: str | Path, *, modalities: Iterable[str] | None = None, split: str | None = None,
                        root_only: bool = False) -> list[dict]:
    """One item per (sample, modality) of a manifest (ARCHITECTURE contract 4), read by :mod:`anybind.data.manifest`.

    Row metadata keeps the sample's ``id``, ``label``, ``split`` and its other keys (under ``extra``), so that
    evaluation can match samples across modalities.
    """
    from ..data.manifest import load_manifest

    manifest = load_manifest(path, split=split, modalities=None if modalities is None else list(modalities),
                             root_only=root_only)
    items = []
    for sample in manifest:
        extra = {k: v for k, v in (("label", sample.label), ("split", sample.split)) if v is not None}
        if sample.extra:
            extra["extra"] = dict(sample.extra)
        for m, source in sample.items.items():
            items.append({"id": sample.id, "modality": m, "source": source, **extra})
    return items


def _source_name(source: Any) -> str | None:
    if isinstance(source, (str, Path)):
        return str(source)
    return None


def _normalize_items(items: Sequence[Any], default_modality: str | None) -> list[dict]:
    out = []
    for i, it in enumerate(items):
        if isinstance(it, Mapping):
            row = dict(it)
            if "source" not in row:
                raise ValueError(f"item {i} has no 'source' (a path, a text or a tensor): {row}")
        else:
            row = {"source": it}
        if row.get("modality") is None:
            row["modality"] = default_modality or modality_for_path(row["source"])
        row.setdefault("id", _source_name(row["source"]) or str(i))
        row["id"] = str(row["id"])
        out.append(row)
    return out


def plan_shards(items: Sequence[dict], shard_size: int) -> list[tuple[str, str, list[dict]]]:
    """Group items by modality (first appearance order) and cut each group into shards: ``(name, modality, rows)``."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it["modality"], []).append(it)
    plan, n = [], 0
    for m, rows in groups.items():
        for lo in range(0, len(rows), shard_size):
            plan.append((f"{n:05d}-{m}", m, rows[lo:lo + shard_size]))
            n += 1
    return plan


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


def _resolve_items(source, modality, modalities, split, root_only=False, text_sidecars=False) -> tuple[list[dict], dict]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            items, ignored = items_from_folder(p, modality, root_only=root_only, text_sidecars=text_sidecars)
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            items, ignored = items_from_manifest(p, modalities=modalities, split=split, root_only=root_only), {}
        elif not p.exists():
            raise FileNotFoundError(f"input {p} does not exist (give a folder or a manifest: "
                                    f"{', '.join(MANIFEST_SUFFIXES)})")
        else:
            raise ValueError(f"{p} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        items, ignored = _normalize_items(list(source), modality), {}
    return items, ignored


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(device: torch.device | str, cores: int | None = None) -> int:
    """DataLoader workers for embedding on this machine.

    On a CPU the tower and the decoding share the cores: below 4 cores the main process decodes between batches
    (a worker would only take a core from the tower's threads, measured in docs/benchmarks.md); above, a quarter
    of the cores decode (at most 8). With a GPU the tower is not on the CPU: every core but one decodes (at most 16).
    """
    cores = cores or available_cores()
    if torch.device(device).type != "cpu":
        return max(0, min(16, cores - 1))
    return 0 if cores < 4 else min(8, cores // 4)


PRECISIONS = ("fp32", "bf16", "auto")


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU with bf16, or a CPU with AMX tiles
    (Intel Sapphire Rapids and later), where a bf16 matrix product runs several times faster than a float32 one."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.cpu, "_is_amx_tile_supported", None)
        try:
            return bool(check()) if check is not None else False
        except Exception:  # noqa: BLE001 - an unknown CPU: no
            return False
    return False


def resolve_precision(precision: str | None, device) -> str:
    """``fp32`` or ``bf16``; ``auto`` is bf16 where :func:`fast_bf16`, else fp32."""
    p = (precision or "fp32").lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if p == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return p


def resolve_workers(num_workers: int | str | None, device) -> int:
    if num_workers is None or (isinstance(num_workers, str) and num_workers.lower() == "auto"):
        return auto_workers(device)
    n = int(num_workers)
    if n < 0:
        raise ValueError(f"num_workers must be >= 0 or auto, got {num_workers}")
    return n


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
    ``num_workers="auto"`` picks the DataLoader workers from the machine (:func:`auto_workers`).
    ``flush_seconds``: write what a shard has so far at least this often (``None``: only whole shards).
    ``precision``: ``fp32`` (exactly ``model.embed``), ``bf16`` (the towers under bfloat16 autocast: on a CPU with
    AMX several times faster, vectors within about 1e-3 of float32 ones) or ``auto`` (:func:`resolve_precision`).

    Ctrl-C (any :class:`KeyboardInterrupt`) writes what the current shard has, then raises
    :class:`anybind.errors.Interrupted` whose ``summary`` says what the store holds; rerunning resumes.
    """
    t0 = time.perf_counter()
    items, ignored = _resolve_items(source, modality, modalities, split, root_only, text_sidecars)
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
        digest = _digest(rows)
        if writer.finished(name, digest):
            _count_reused(summary, writer, [name])
            continue
        start, parts = _finished_prefix(writer, name, rows)
        if parts:
            _count_reused(summary, writer, parts)
        pending.append((name, m, rows, digest, start))

    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=summary.done, desc="embed", unit="item")
    was_training = model.training
    model.eval()
    threads = torch.get_num_threads()
    if workers and model.device.type == "cpu":  # the workers' cores are not the tower's
        torch.set_num_threads(max(1, min(threads, available_cores() - workers)))
    interrupted: KeyboardInterrupt | None = None
    try:
        for m in dict.fromkeys(p[1] for p in pending):
            _embed_modality(model, m, [p for p in pending if p[1] == m], writer, summary, batch_size, workers, bar,
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


def _digest(rows: Sequence[dict]) -> str:
    return inputs_digest({**r, "source": _source_name(r["source"])} for r in rows)


def _count_reused(summary: EmbedSummary, writer: StoreWriter, shards) -> None:
    from .store import _load_shard

    for s in shards:
        shard = _load_shard(writer.marker_path(s)) if isinstance(s, str) else s
        summary.shards_reused += 1
        summary.reused += shard.count
        summary.reused_failed += len(shard.errors)


def _part_name(name: str, start: int) -> str:
    return f"{name}.{start:06d}"


def _finished_prefix(writer: StoreWriter, name: str, rows: Sequence[dict]):
    """How many leading rows of planned shard ``name`` earlier runs finished as parts, and those parts."""
    from ..errors import CheckpointError

    start, kept = 0, []
    for part in writer.shard_parts(name):
        planned = int(part.marker.get("planned", part.count))
        if part.name != _part_name(name, start):
            break  # a gap: what follows is embedded again
        digest = _digest(rows[start:start + planned])
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


def _worker_init(worker_id: int) -> None:
    """Embedding workers: one thread each, and deaf to Ctrl-C / SIGTERM (the main process stops them after it has
    written what it holds; a worker killed first would only turn a clean stop into a crash)."""
    import signal

    torch.set_num_threads(1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _embed_modality(model, m, shards, writer: StoreWriter, summary: EmbedSummary, batch_size, num_workers, bar, *,
                    flush_seconds: float | None = None, precision: str = "fp32") -> None:
    """Embed every pending shard of one modality through a single DataLoader (batches never span two shards).

    ``shards`` are ``(name, modality, rows, digest[, first row to embed])``. A shard embedded from its first row in
    one go is written whole; otherwise (a time flush after ``flush_seconds``, a resumed part, an interruption) its
    rows are written as parts. A :class:`KeyboardInterrupt` writes the rows done so far, then propagates.
    """
    shards = [(s[0], s[1], s[2], s[3], s[4] if len(s) > 4 else 0) for s in shards]
    rows = [r for _, _, shard_rows, _, start in shards for r in shard_rows[start:]]
    if not rows:
        return
    ds = ItemDataset(m, [r["source"] for r in rows], model.input_contract(m), skip_errors=True, timed=True)
    batches, bounds, at = [], [], 0
    for _, _, shard_rows, _, start in shards:
        end = at + len(shard_rows) - start
        batches += [list(range(lo, min(lo + batch_size, end))) for lo in range(at, end, batch_size)]
        bounds.append((at, end))
        at = end
    loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers, collate_fn=ds.collate,
                        persistent_workers=False, worker_init_fn=_worker_init if num_workers else None)
    encoder, device = model.encoders[m], model.device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device.type, enabled=False))
    it = iter(loader)
    for (name, _, shard_rows, digest, start), (lo, hi) in zip(shards, bounds):
        vecs = np.empty((hi - lo, model.embed_dim), dtype=np.float32)
        ok = np.zeros(hi - lo, dtype=bool)
        errors: list[tuple[int, dict]] = []
        done = flushed = 0  # rows of this shard finished / already written as parts
        last_flush = time.monotonic()

        def write(upto: int, whole: bool) -> None:
            nonlocal flushed, last_flush
            keep = np.flatnonzero(ok[flushed:upto]) + flushed
            meta = [_meta(shard_rows[start + j]) for j in keep]
            errs = [e for j, e in errors if flushed <= j < upto]
            if whole:
                for part in writer.shard_parts(name):  # a whole shard replaces stale parts of the same rows
                    writer.remove_shard(part.name)
            part = name if whole else _part_name(name, start + flushed)
            part_digest = digest if whole else _digest(shard_rows[start + flushed:start + upto])
            writer.write_shard(part, m, vecs[keep], meta, errors=errs, planned=upto - flushed,
                               inputs_sha256=part_digest)
            summary.shards_written += 1
            summary.embedded += len(keep)
            summary.embedded_by_modality[m] = summary.embedded_by_modality.get(m, 0) + len(keep)
            summary.failed += len(errs)
            flushed, last_flush = upto, time.monotonic()

        try:
            while done < hi - lo:
                idx, batch, errs, seconds = next(it)
                for key, value in seconds.items():
                    summary.timing[key] = summary.timing.get(key, 0.0) + value
                for i, msg in errs:
                    r = rows[i]
                    errors.append((i - lo, {"id": r["id"], "modality": m, "source": _source_name(r["source"]),
                                            "error": msg}))
                if batch is not None:
                    t = time.perf_counter()
                    with autocast:
                        z = encoder(batch.to(device))
                    z = torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()
                    summary.timing["tower"] = summary.timing.get("tower", 0.0) + time.perf_counter() - t
                    vecs[idx.numpy() - lo] = z
                    ok[idx.numpy() - lo] = True
                done += len(idx) + len(errs)  # batches arrive in order: rows [0, done) are finished
                if bar is not None:
                    bar.update(len(idx) + len(errs))
                if (flush_seconds is not None and done < hi - lo and time.monotonic() - last_flush >= flush_seconds):
                    write(done, whole=False)
        except KeyboardInterrupt:
            if done > flushed:
                write(done, whole=False)
            raise
        write(done, whole=(start == 0 and flushed == 0))


def _meta(row: dict) -> dict:
    return {**{k: v for k, v in row.items() if k != "source"}, "source": _source_name(row["source"])}
