"""Embed a collection (manifest, folder or item list) with a model into an :class:`EmbeddingStore`.

Items are planned into single-modality shards of ``shard_size`` items, in a stable order, so that a resumed run
recognises finished shards (their marker records a digest of the planned inputs) and embeds only the rest.
Bad inputs are skipped, counted and listed (``errors.jsonl``), never fatal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import InputError
from ..modality import get_modality, modality_for_path
from ..model import ItemDataset
from .store import EmbeddingStore, StoreWriter, inputs_digest

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".json")


@dataclass
class EmbedSummary:
    """What one :func:`embed_to_store` run did."""

    store: EmbeddingStore
    planned: int = 0
    embedded: int = 0
    failed: int = 0
    reused: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def errors(self) -> list[dict]:
        return self.store.errors

    def describe(self) -> str:
        lines = [f"store {self.store.path}: {len(self.store)} vectors in {len(self.store.shards)} shards "
                 f"({', '.join(f'{m} {n}' for m, n in self.store.modality_counts().items()) or 'empty'})",
                 f"this run: embedded {self.embedded} items in {self.shards_written} shards, reused {self.shards_reused} "
                 f"finished shards ({self.reused} items), {self.failed} items failed, {self.seconds:.1f} s"]
        if self.ignored:
            lines.append("ignored: " + ", ".join(f"{n} {why}" for why, n in self.ignored.items()))
        errs = self.errors
        if errs:
            lines.append(f"{len(errs)} inputs could not be embedded (listed in {self.store.path / 'errors.jsonl'}):")
            lines += [f"  {e['error']}" for e in errs[:10]]
            if len(errs) > 10:
                lines.append(f"  ... and {len(errs) - 10} more")
        return "\n".join(lines)


def items_from_folder(folder: str | Path, modality: str | None = None, *, recursive: bool = True,
                      root_only: bool = False) -> tuple[list[dict], dict]:
    """Every file under ``folder`` as an item; the modality comes from the extension unless given.

    Returns ``(items, ignored)``: files no modality claims are counted in ``ignored`` rather than failing.
    The id of an item is its path relative to ``folder``. ``root_only`` refuses a symlink leading outside it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file() and not p.name.startswith("."))
    items, unknown = [], 0
    for p in files:
        if root_only:
            from ..data.manifest import check_inside

            check_inside(folder, p.relative_to(folder).as_posix(), modality=modality or "input", where=p)
        if modality is not None:
            m = modality
            if get_modality(m).extensions and p.suffix.lower() not in get_modality(m).extensions:
                unknown += 1
                continue
        else:
            try:
                m = modality_for_path(p)
            except InputError:
                unknown += 1
                continue
        items.append({"id": p.relative_to(folder).as_posix(), "modality": m, "source": str(p)})
    return items, ({"files with no known modality": unknown} if unknown else {})


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


def _resolve_items(source, modality, modalities, split, root_only=False) -> tuple[list[dict], dict]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            items, ignored = items_from_folder(p, modality, root_only=root_only)
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            items, ignored = items_from_manifest(p, modalities=modalities, split=split, root_only=root_only), {}
        else:
            raise ValueError(f"{p} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        items, ignored = _normalize_items(list(source), modality), {}
    return items, ignored


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
    num_workers: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    root_only: bool = False,
) -> EmbedSummary:
    """Embed ``source`` (a manifest file, a folder, or a list of items) into a store at ``out_dir``; resumable.

    An item is a path or a dict ``{"source": path|text|tensor, "modality"?, "id"?, ...extra}``; extra keys are
    kept in the row metadata. ``modality`` forces the modality of a folder's files / plain items (default: from
    the extension). Items of modalities the model has no tower for are ignored and counted. ``root_only``
    refuses manifest paths (or folder symlinks) that lead outside the manifest's (or folder's) own folder.
    """
    t0 = time.perf_counter()
    items, ignored = _resolve_items(source, modality, modalities, split, root_only)
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

    writer = StoreWriter(out_dir, model.embed_dim, dtype=dtype, model=model_info(model, checkpoint), overwrite=overwrite)
    summary = EmbedSummary(store=None, planned=len(items), ignored=ignored)  # type: ignore[arg-type]
    plan = plan_shards(items, shard_size)
    pending = []
    for name, m, rows in plan:
        digest = inputs_digest({**r, "source": _source_name(r["source"])} for r in rows)
        if writer.finished(name, digest):
            summary.shards_reused += 1
            summary.reused += len(rows)
        else:
            pending.append((name, m, rows, digest))

    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=summary.reused, desc="embed", unit="item")
    was_training = model.training
    model.eval()
    try:
        for m in dict.fromkeys(p[1] for p in pending):
            _embed_modality(model, m, [p for p in pending if p[1] == m], writer, summary, batch_size, num_workers, bar)
    except BaseException:
        writer.close()  # finished shards stay; the folder is free for the resuming run
        raise
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    summary.store = writer.finalize()
    summary.seconds = time.perf_counter() - t0
    return summary


def _embed_modality(model, m, shards, writer: StoreWriter, summary: EmbedSummary, batch_size, num_workers, bar) -> None:
    """Embed every pending shard of one modality through a single DataLoader (batches never span two shards)."""
    rows = [r for _, _, shard_rows, _ in shards for r in shard_rows]
    ds = ItemDataset(m, [r["source"] for r in rows], model.input_contract(m), skip_errors=True)
    batches, bounds, at = [], [], 0
    for _, _, shard_rows, _ in shards:
        end = at + len(shard_rows)
        batches += [list(range(lo, min(lo + batch_size, end))) for lo in range(at, end, batch_size)]
        bounds.append((at, end))
        at = end
    loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers, collate_fn=ds.collate,
                        persistent_workers=False)
    encoder, device = model.encoders[m], model.device
    it = iter(loader)
    for (name, _, shard_rows, digest), (lo, hi) in zip(shards, bounds):
        vecs = np.empty((hi - lo, model.embed_dim), dtype=np.float32)
        ok = np.zeros(hi - lo, dtype=bool)
        errors = []
        done = 0
        while done < hi - lo:
            idx, batch, errs = next(it)
            done += len(idx) + len(errs)
            for i, msg in errs:
                r = rows[i]
                errors.append({"id": r["id"], "modality": m, "source": _source_name(r["source"]), "error": msg})
            if batch is not None:
                z = torch.nn.functional.normalize(encoder(batch.to(device)).float(), dim=-1).cpu().numpy()
                vecs[idx.numpy() - lo] = z
                ok[idx.numpy() - lo] = True
            if bar is not None:
                bar.update(len(idx) + len(errs))
        meta = [{**{k: v for k, v in shard_rows[j].items() if k != "source"}, "source": _source_name(shard_rows[j]["source"])}
                for j in np.flatnonzero(ok)]
        writer.write_shard(name, m, vecs[ok], meta, errors=errors, planned=hi - lo, inputs_sha256=digest)
        summary.shards_written += 1
        summary.embedded += int(ok.sum())
        summary.failed += len(errors)
