"""The search service without the web framework: queries -> embeddings -> one combined vector -> hits.

:class:`SearchService` holds the model and the index (loaded once), resolves each query (a text, an uploaded file,
or an item already in the index), embeds them through the cross-request :class:`~anybind.serve.batcher.MicroBatcher`
(one tower call per modality for every query that arrives together), combines them as ``anybind-search`` does
(:func:`anybind.retrieval.search.combine`: the renormalized weighted sum) and searches the index (batched too).

Requests are checked by :mod:`.queries` (limits, query fields, uploads). Items are named by a key
``"<modality>:<id>"`` (a bare id works when it is unique in the index) and read by :mod:`.items`: the service only
ever opens files that the index lists; nothing a request says is ever used as a path. Towers run through the one
embedding loop (:func:`anybind.embedding.encode_batches`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..embedding import encode_batches
from ..errors import InputError
from ..modality import get_modality
from ..retrieval.index import Index
from ..retrieval.search import combine
from .batcher import MicroBatcher
from .decode import DecodePool, decode_item
from .items import ItemCatalog
from .previews import PreviewCache, preview_error, render_preview
from .queries import QuerySpec, RequestError, ServeSettings, Upload, parse_queries, parse_target, upload_modality


class SearchService:
    """Search over ``index`` with ``model``; start it (``await service.start()``) inside the serving event loop."""

    def __init__(self, index: Index, model, settings: ServeSettings | None = None, *, checkpoint: str | None = None):
        if model.embed_dim != index.embed_dim:
            raise ValueError(f"model embeds to {model.embed_dim} dims but the index holds {index.embed_dim}-d vectors")
        self.index, self.model = index, model.eval()
        self.settings = settings or ServeSettings()
        self.checkpoint = checkpoint
        self.started_at = time.time()
        self.items = ItemCatalog(index)
        self.previews = PreviewCache(self.settings.preview_cache, max_items=self.settings.preview_cache_items)
        self.decoder = DecodePool(self.settings.decode_workers, imports=self.settings.decode_imports)
        self._tower_thread = ThreadPoolExecutor(1, thread_name_prefix="anybind-tower")
        self._index_thread = ThreadPoolExecutor(1, thread_name_prefix="anybind-index")
        self._preview_threads = ThreadPoolExecutor(2, thread_name_prefix="anybind-preview")
        self.towers: MicroBatcher | None = None
        self.searches: MicroBatcher | None = None
        self._upload_dir: Path | None = None
        self.requests = 0

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        window = self.settings.batch_window_ms / 1000
        self.towers = MicroBatcher(self._tower_batch, self._tower_thread, window=window, max_batch=self.settings.max_batch)
        self.searches = MicroBatcher(self._search_batch, self._index_thread, window=window,
                                     max_batch=self.settings.max_batch)
        self._upload_dir = Path(tempfile.mkdtemp(prefix="anybind-serve-uploads-"))
        await self.decoder.start()

    async def close(self) -> None:
        for b in (self.towers, self.searches):
            if b is not None:
                await b.close()
        await self.decoder.close()
        for pool in (self._tower_thread, self._index_thread, self._preview_threads):
            pool.shutdown(wait=False, cancel_futures=True)
        if self._upload_dir is not None:
            shutil.rmtree(self._upload_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ items

    def resolve(self, ref: str) -> int:
        """The row of the item named ``ref`` (``"modality:id"``, or an id unique in the index)."""
        return self.items.resolve(ref)

    def key(self, row: int) -> str:
        return self.items.key(row)

    def item_media(self, row: int) -> tuple[str, Any]:
        """``("file", path)`` of the item's media file or ``("text", str)`` for a text item given inline."""
        return self.items.item_media(row)

    def item_vector(self, row: int) -> np.ndarray:
        """The indexed vector of ``row`` (the query of "more like this")."""
        return self.items.item_vector(row)

    async def preview(self, row: int) -> tuple[bytes, str]:
        meta = self.index.metadata[row]
        key, size = self.key(row), self.settings.preview_size
        source = meta.get("source")
        stamp = ""
        if isinstance(source, str) and meta.get("modality") != "text":
            try:
                stamp = str(os.stat(source).st_mtime_ns)
            except OSError:
                raise RequestError(404, f"the media file of item {key!r} is missing on the server", "no_media") from None
        cache_key = f"{key}|{size}|{stamp}"
        cached = self.previews.get(cache_key)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        extra = {k: v for k, v in meta.items() if k not in ("id", "modality", "source")}
        work = loop.run_in_executor(self._preview_threads, lambda: render_preview(meta["modality"], source, extra, size=size))
        try:
            value = await asyncio.wait_for(work, self.settings.preview_timeout)
        except asyncio.TimeoutError:
            raise RequestError(504, f"the preview of item {key!r} took longer than {self.settings.preview_timeout:g} s",
                               "timeout") from None
        except Exception as exc:  # noqa: BLE001 - the item's own file is broken
            raise RequestError(422, str(preview_error(key, meta["modality"], exc)), "InputError") from None
        self.previews.put(cache_key, value)
        return value

    # ------------------------------------------------------------------------------------------ queries

    def upload_path(self, suffix: str) -> Path:
        assert self._upload_dir is not None, "service not started"
        return self._upload_dir / f"{uuid.uuid4().hex}{suffix}"

    def upload_modality(self, filename: str, modality: str | None = None) -> tuple[str, str]:
        """``(modality, suffix)`` of an upload named ``filename``, from its extension (or ``modality``)."""
        return upload_modality(filename, self.model.modalities, modality)

    def accepted_types(self) -> dict[str, list[str]]:
        return {m: list(get_modality(m).extensions) for m in self.model.modalities}

    def parse_queries(self, raw: Any, uploads: Sequence[Upload] = ()) -> list[QuerySpec]:
        """Request queries (``[{"text"|"id"|"file": ..., "weight"?: w}, ...]``) -> :class:`QuerySpec` list."""
        return parse_queries(raw, uploads, settings=self.settings, towers=self.model.modalities,
                             item_key=lambda ref: self.key(self.resolve(ref)))

    def parse_target(self, k: Any, modalities: Any) -> tuple[int, tuple[str, ...] | None]:
        return parse_target(k, modalities, settings=self.settings, indexed=self.index.modalities)

    # ------------------------------------------------------------------------------------------ search

    async def search(self, specs: Sequence[QuerySpec], k: int, modalities: tuple[str, ...] | None) -> dict:
        """Hits for the combined query; past ``request_timeout`` every part of the work still pending is cancelled."""
        self.requests += 1
        t0 = time.perf_counter()
        try:
            hits = await asyncio.wait_for(self._search(specs, k, modalities), self.settings.request_timeout)
        except asyncio.TimeoutError:
            raise RequestError(504, f"the search took longer than the request time limit of "
                                    f"{self.settings.request_timeout:g} s; its work was cancelled", "timeout") from None
        return {"queries": [s.describe() for s in specs], "k": k, "modalities": list(modalities) if modalities else None,
                "hits": [self.items.hit_json(h) for h in hits], "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

    async def _search(self, specs, k, modalities):
        tasks = [asyncio.ensure_future(self._embed(s)) for s in specs]
        try:
            vectors = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:  # one query failed (or the request timed out): stop the others' work
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        try:
            vec = combine(np.stack(vectors), [s.weight for s in specs])
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
        return await self.searches.submit((modalities, k), vec)

    async def _embed(self, spec: QuerySpec) -> np.ndarray:
        if spec.kind == "id":
            return self.item_vector(self.resolve(spec.value))
        if spec.kind == "text":
            return await self.towers.submit("text", spec.value)
        contract = self.model.input_contract(spec.modality)
        x = await self.decoder.decode(spec.modality, spec.value, contract, timeout=self.settings.decode_timeout,
                                      name=spec.name)
        return await self.towers.submit(spec.modality, x)

    def _tower_batch(self, modality: str, items: list) -> list:
        """One tower call for every item of ``modality`` that arrived together (runs in the tower thread)."""
        results: list[Any] = [None] * len(items)
        xs, where = [], []
        contract = self.model.input_contract(modality)
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                xs.append(item)
            else:  # a text: tokenized here, off the event loop
                try:
                    xs.append(decode_item(modality, item, contract))
                except InputError as err:
                    results[i] = err
                    continue
            where.append(i)
        shapes: dict[tuple, list[int]] = {}  # items of one contract share a shape; one call per shape all the same
        for j, x in enumerate(xs):
            shapes.setdefault(tuple(x.shape), []).append(j)
        tower, collate = self.model.encoders[modality], get_modality(modality).collate_fn
        batches = ((group, collate([xs[j] for j in group])) for group in shapes.values())
        for group, z in encode_batches(tower, batches, device=self.model.device):
            z = z.numpy()
            for row, j in enumerate(group):
                results[where[j]] = z[row]
        return results

    def _search_batch(self, key, vectors: list) -> list:
        modalities, k = key
        return self.index.search(np.stack(vectors), k=k, modalities=modalities)

    # ------------------------------------------------------------------------------------------ info

    def info(self) -> dict:
        meta = getattr(self.model, "checkpoint_meta", None) or {}
        towers = {m: getattr(e, "registry_name", None) or type(e).__name__ for m, e in self.model.encoders.items()}
        return {
            "model": {"checkpoint": self.checkpoint, "sha256": meta.get("sha256"), "embed_dim": self.model.embed_dim,
                      "towers": towers, "device": str(self.model.device)},
            "index": {"count": len(self.index), "embed_dim": self.index.embed_dim, "modalities": self.index.describe()},
            "uploads": {"accepted": self.accepted_types(), "max_bytes": self.settings.max_upload_bytes,
                        "max_queries": self.settings.max_queries, "decode_timeout_s": self.settings.decode_timeout},
            "settings": self.settings.public(),
        }

    def stats(self) -> dict:
        def batches(b):
            return {str(k if not isinstance(k, tuple) else f"{','.join(k[0] or ('all',))} k={k[1]}"): dict(v)
                    for k, v in (b.stats.items() if b else ())}

        return {"requests": self.requests, "tower_calls": batches(self.towers), "index_calls": batches(self.searches),
                "pending": (self.towers.pending() if self.towers else 0) + (self.searches.pending() if self.searches else 0),
                "decode_workers_alive": self.decoder.alive(), "decode_workers_killed": self.decoder.killed,
                "previews_cached": len(self.previews), "uptime_s": round(time.time() - self.started_at, 1)}
