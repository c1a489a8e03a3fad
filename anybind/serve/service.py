"""The search service without the web framework: queries -> embeddings -> one combined vector -> hits.

:class:`SearchService` holds the model and the index (loaded once), resolves each query (a text, an uploaded file,
or an item already in the index), embeds them through the cross-request :class:`~anybind.serve.batcher.MicroBatcher`
(one tower call per modality for every query that arrives together), combines them as ``anybind-search`` does
(:func:`anybind.retrieval.search.combine`: the renormalized weighted sum) and searches the index (batched too).

Items are named by a key ``"<modality>:<id>"`` (a bare id works when it is unique in the index). The service only
ever opens files that the index lists; nothing a request says is ever used as a path.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
import torch

from ..errors import InputError
from ..modality import get_modality
from ..retrieval.index import Index, normalize
from ..retrieval.search import combine
from .batcher import MicroBatcher
from .decode import DecodePool, decode_item
from .previews import PreviewCache, preview_error, render_preview


@dataclass
class ServeSettings:
    """Limits and knobs of the service (``anybind-serve --help`` sets each)."""

    max_upload_bytes: int = 32 << 20  # one uploaded file
    max_body_bytes: int = 64 << 20  # a whole request (every upload plus the form)
    max_queries: int = 16  # queries combined in one search
    max_k: int = 1000
    default_k: int = 10
    max_text_chars: int = 16384  # a text query
    decode_timeout: float = 10.0  # seconds to decode and transform one upload
    request_timeout: float = 30.0  # seconds for a whole search; past it the request's work is cancelled
    decode_workers: int = 2  # worker processes decoding uploads (0: threads of the server)
    decode_imports: tuple[str, ...] = ()  # modules the decode workers import first (plugins registering readers)
    batch_window_ms: float = 5.0  # how long the first query of a batch waits for others
    max_batch: int = 32
    preview_size: int = 256
    preview_cache: str | None = None  # folder for previews on disk (memory only when None)
    preview_cache_items: int = 1024
    preview_timeout: float = 20.0

    def public(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "preview_cache"}


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message for the body."""

    def __init__(self, status: int, message: str, kind: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class QuerySpec:
    """One query of a search: ``kind`` is ``text``, ``file`` (an upload on disk) or ``id`` (an indexed item)."""

    kind: str
    value: Any
    weight: float = 1.0
    modality: str | None = None
    name: str | None = None  # an upload's file name, for messages

    def describe(self) -> dict:
        out = {"kind": self.kind, "weight": self.weight}
        if self.kind == "text":
            out["text"] = self.value if len(self.value) <= 200 else self.value[:200] + "..."
        elif self.kind == "file":
            out.update(modality=self.modality, name=self.name)
        else:
            out["item"] = self.value
        return out


@dataclass
class Upload:
    """An uploaded file, saved under a name the server chose, in a folder the service owns."""

    path: Path
    name: str
    modality: str
    size: int = field(default=0)


def _safe_name(name: str | None) -> str:
    name = os.path.basename(str(name or "upload").replace("\\", "/")) or "upload"
    return "".join(c if c.isprintable() else "?" for c in name)[:200]


class SearchService:
    """Search over ``index`` with ``model``; start it (``await service.start()``) inside the serving event loop."""

    def __init__(self, index: Index, model, settings: ServeSettings | None = None, *, checkpoint: str | None = None):
        if model.embed_dim != index.embed_dim:
            raise ValueError(f"model embeds to {model.embed_dim} dims but the index holds {index.embed_dim}-d vectors")
        self.index, self.model = index, model.eval()
        self.settings = settings or ServeSettings()
        self.checkpoint = checkpoint
        self.started_at = time.time()
        self._keys: dict[str, int] = {}
        self._ids: dict[str, int] = {}  # a bare id -> its row, or -1 when several modalities share it
        for row, meta in enumerate(index.metadata):
            key = f"{meta.get('modality')}:{meta.get('id')}"
            self._keys.setdefault(key, row)
            bare = str(meta.get("id"))
            self._ids[bare] = row if bare not in self._ids else -1
        self._position = np.full(len(index), -1, dtype=np.int64)  # a row's position inside its modality's part
        for part in index.parts.values():
            self._position[part.rows] = np.arange(len(part))
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
        ref = str(ref)
        row = self._keys.get(ref)
        if row is None:
            row = self._ids.get(ref)
            if row == -1:
                keys = sorted(f"{m['modality']}:{ref}" for m in self.index.metadata if str(m.get("id")) == ref)
                raise RequestError(404, f"item id {ref!r} is shared by several items ({', '.join(keys)}); name one "
                                        "as 'modality:id'", "ambiguous_item")
        if row is None:
            shown = ref if len(ref) <= 200 else ref[:200] + "..."
            raise RequestError(404, f"no item {shown!r} in the index (items are named 'modality:id', as in the "
                                    "'item' field of a search hit)", "unknown_item")
        return row

    def key(self, row: int) -> str:
        meta = self.index.metadata[row]
        return f"{meta.get('modality')}:{meta.get('id')}"

    def item_media(self, row: int) -> tuple[str, Any]:
        """``("file", path)`` of the item's media file or ``("text", str)`` for a text item given inline."""
        meta = self.index.metadata[row]
        modality, source = meta.get("modality"), meta.get("source")
        if modality == "text":
            text = meta.get("text") or source
            if isinstance(text, str) and text.lower().endswith(".txt") and Path(text).is_file():
                return "file", Path(text)
            if text is None:
                raise RequestError(404, f"text item {self.key(row)!r} has no text stored", "no_media")
            return "text", str(text)
        if not isinstance(source, str) or not source:
            raise RequestError(404, f"item {self.key(row)!r} has no media file (it was embedded from in-memory data)",
                               "no_media")
        path = Path(source)
        if not path.is_file():
            raise RequestError(404, f"the media file of item {self.key(row)!r} is missing on the server", "no_media")
        return "file", path

    def item_vector(self, row: int) -> np.ndarray:
        """The indexed vector of ``row`` (the query of "more like this")."""
        modality = self.index.metadata[row]["modality"]
        part, pos = self.index.parts[modality], int(self._position[row])
        if part.backend == "torch":
            v = part.impl[pos].numpy()
        else:
            try:
                v = part.impl.reconstruct(pos)
            except RuntimeError:  # an IVF index keeps no id -> list map until asked to
                from ..retrieval.index import import_faiss

                import_faiss().extract_index_ivf(part.impl).make_direct_map()
                v = part.impl.reconstruct(pos)
        return normalize(np.asarray(v, dtype=np.float32)[None])[0]

    def hit_json(self, hit) -> dict:
        key = f"{hit.modality}:{hit.id}"
        url = "/items/" + quote(key, safe="")
        out = {"item": key, "id": hit.id, "modality": hit.modality, "score": round(float(hit.score), 6),
               "metadata": hit.meta, "media": url, "preview": url + "/preview"}
        if hit.modality == "text":
            text = hit.meta.get("text") or hit.source
            if isinstance(text, str) and not text.lower().endswith(".txt"):
                out["text"] = text if len(text) <= 2000 else text[:2000] + "..."
        if isinstance(hit.source, str) and hit.modality != "text":
            out["name"] = Path(hit.source).name  # never the server's full path
        return out

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
        suffix = Path(filename).suffix.lower()
        towers = self.model.modalities
        if modality is not None:
            if modality not in towers:
                raise RequestError(400, f"upload {filename!r}: modality {modality!r} has no tower in this model "
                                        f"(it has {', '.join(towers)})")
            exts = get_modality(modality).extensions
            if exts and suffix not in exts:
                raise RequestError(415, f"upload {filename!r}: {suffix or 'no extension'} is not a {modality} file "
                                        f"type (accepted: {', '.join(exts)})", "unsupported_type")
            return modality, suffix
        owners = [m for m in towers if suffix and suffix in get_modality(m).extensions]
        if len(owners) != 1:
            accepted = ", ".join(e for m in towers for e in get_modality(m).extensions)
            raise RequestError(415, f"upload {filename!r}: file type {suffix or '(no extension)'!r} is not accepted; "
                                    f"accepted: {accepted}", "unsupported_type")
        return owners[0], suffix

    def accepted_types(self) -> dict[str, list[str]]:
        return {m: list(get_modality(m).extensions) for m in self.model.modalities}

    def parse_queries(self, raw: Any, uploads: Sequence[Upload] = ()) -> list[QuerySpec]:
        """Request queries (``[{"text"|"id"|"file": ..., "weight"?: w}, ...]``) -> :class:`QuerySpec` list."""
        if not isinstance(raw, list) or not raw:
            raise RequestError(400, "'queries' must be a non-empty list of {\"text\": ...}, {\"id\": ...} or "
                                    "{\"file\": <upload number>} objects")
        if len(raw) > self.settings.max_queries:
            raise RequestError(400, f"{len(raw)} queries, over the limit of {self.settings.max_queries} per search")
        specs, used = [], set()
        for i, q in enumerate(raw):
            if not isinstance(q, dict):
                raise RequestError(400, f"query {i} must be an object such as {{\"text\": \"a dog\"}}, got {type(q).__name__}")
            kinds = [k for k in ("text", "id", "file") if q.get(k) is not None]
            unknown = sorted(set(q) - {"text", "id", "file", "weight", "modality"})
            if unknown:
                raise RequestError(400, f"query {i}: unknown field(s) {unknown}; a query has one of text, id, file, "
                                        "and optionally weight")
            if len(kinds) != 1:
                raise RequestError(400, f"query {i} must have exactly one of 'text', 'id' or 'file', got "
                                        f"{kinds or 'none'}")
            weight = q.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise RequestError(400, f"query {i}: weight must be a finite number, got {weight!r}")
            kind, value = kinds[0], q[kinds[0]]
            if kind == "text":
                if not isinstance(value, str) or not value.strip():
                    raise RequestError(400, f"query {i}: text must be a non-empty string")
                if len(value) > self.settings.max_text_chars:
                    raise RequestError(413, f"query {i}: text of {len(value)} characters, over the limit of "
                                            f"{self.settings.max_text_chars}", "too_large")
                if "text" not in self.model.modalities:
                    raise RequestError(400, f"query {i}: this model has no text tower (it has {', '.join(self.model.modalities)})")
                specs.append(QuerySpec("text", value, float(weight)))
            elif kind == "id":
                if not isinstance(value, str):
                    raise RequestError(400, f"query {i}: id must be a string such as 'image:cat-3'")
                specs.append(QuerySpec("id", self.key(self.resolve(value)), float(weight)))
            else:
                n = self._upload_number(i, value, uploads)
                used.add(n)
                up = uploads[n]
                specs.append(QuerySpec("file", up.path, float(weight), up.modality, up.name))
        for n, up in enumerate(uploads):
            if n not in used:
                raise RequestError(400, f"upload {up.name!r} (file {n}) is not used by any query; add "
                                        f"{{\"file\": {n}}} to 'queries' or leave 'queries' out")
        return specs

    @staticmethod
    def _upload_number(i: int, value: Any, uploads: Sequence[Upload]) -> int:
        if isinstance(value, bool):
            value = None
        if isinstance(value, int) and 0 <= value < len(uploads):
            return value
        if isinstance(value, str):
            names = [n for n, u in enumerate(uploads) if u.name == value]
            if len(names) == 1:
                return names[0]
        raise RequestError(400, f"query {i}: file {value!r} names no uploaded file (give its number, 0 to "
                                f"{len(uploads) - 1}, or its file name)" if uploads else
                                f"query {i}: file queries need a multipart request with the files in field 'file'")

    def parse_target(self, k: Any, modalities: Any) -> tuple[int, tuple[str, ...] | None]:
        if k is None:
            k = self.settings.default_k
        if isinstance(k, str) and k.strip().lstrip("-").isdigit():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.settings.max_k:
            raise RequestError(400, f"k must be an integer from 1 to {self.settings.max_k}, got {k!r}")
        if modalities in (None, "", []):
            return k, None
        if isinstance(modalities, str):
            modalities = [m.strip() for m in modalities.split(",") if m.strip()]
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise RequestError(400, f"modalities must be a list of modality names, got {modalities!r}")
        unknown = [m for m in modalities if m not in self.index.parts]
        if unknown:
            raise RequestError(400, f"the index holds no {', '.join(map(repr, unknown))} items; it has "
                                    f"{', '.join(self.index.modalities)}")
        return k, tuple(dict.fromkeys(modalities))

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
                "hits": [self.hit_json(h) for h in hits], "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

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

    @torch.no_grad()
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
        for group in shapes.values():
            batch = collate([xs[j] for j in group]).to(self.model.device)
            z = torch.nn.functional.normalize(tower(batch).float(), dim=-1).cpu().numpy()
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
