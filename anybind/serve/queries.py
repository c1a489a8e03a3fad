"""What a search request may ask, and how it is checked: the service's limits (:class:`ServeSettings`), its
queries (:class:`QuerySpec`: a text, an uploaded file or an indexed item, each with a weight) and uploads.

Every refusal is a :class:`RequestError`: an HTTP status, a message for the body and a short kind.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..modality import get_modality


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


def safe_name(name: str | None) -> str:
    """An upload's file name fit for messages: its last path part, printable, at most 200 characters."""
    name = os.path.basename(str(name or "upload").replace("\\", "/")) or "upload"
    return "".join(c if c.isprintable() else "?" for c in name)[:200]


def upload_modality(filename: str, towers: Sequence[str], modality: str | None = None) -> tuple[str, str]:
    """``(modality, suffix)`` of an upload named ``filename``, from its extension (or ``modality``); ``towers``: the
    model's modalities."""
    suffix = Path(filename).suffix.lower()
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


def parse_queries(raw: Any, uploads: Sequence[Upload], *, settings: ServeSettings, towers: Sequence[str],
                  item_key: Callable[[str], str]) -> list[QuerySpec]:
    """Request queries (``[{"text"|"id"|"file": ..., "weight"?: w}, ...]``) -> :class:`QuerySpec` list.

    ``towers``: the model's modalities; ``item_key``: an item reference -> its ``"modality:id"`` key (raising
    :class:`RequestError` for an unknown one).
    """
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'queries' must be a non-empty list of {\"text\": ...}, {\"id\": ...} or "
                                "{\"file\": <upload number>} objects")
    if len(raw) > settings.max_queries:
        raise RequestError(400, f"{len(raw)} queries, over the limit of {settings.max_queries} per search")
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
            if len(value) > settings.max_text_chars:
                raise RequestError(413, f"query {i}: text of {len(value)} characters, over the limit of "
                                        f"{settings.max_text_chars}", "too_large")
            if "text" not in towers:
                raise RequestError(400, f"query {i}: this model has no text tower (it has {', '.join(towers)})")
            specs.append(QuerySpec("text", value, float(weight)))
        elif kind == "id":
            if not isinstance(value, str):
                raise RequestError(400, f"query {i}: id must be a string such as 'image:cat-3'")
            specs.append(QuerySpec("id", item_key(value), float(weight)))
        else:
            n = upload_number(i, value, uploads)
            used.add(n)
            up = uploads[n]
            specs.append(QuerySpec("file", up.path, float(weight), up.modality, up.name))
    for n, up in enumerate(uploads):
        if n not in used:
            raise RequestError(400, f"upload {up.name!r} (file {n}) is not used by any query; add "
                                    f"{{\"file\": {n}}} to 'queries' or leave 'queries' out")
    return specs


def upload_number(i: int, value: Any, uploads: Sequence[Upload]) -> int:
    """The upload that query ``i``'s ``"file"`` names: by number, or by a file name only one upload has."""
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


def parse_target(k: Any, modalities: Any, *, settings: ServeSettings,
                 indexed: Sequence[str]) -> tuple[int, tuple[str, ...] | None]:
    """A search's ``k`` and target ``modalities`` (``None``: all), checked; ``indexed``: the index's modalities."""
    if k is None:
        k = settings.default_k
    if isinstance(k, str) and k.strip().lstrip("-").isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k:
        raise RequestError(400, f"k must be an integer from 1 to {settings.max_k}, got {k!r}")
    if modalities in (None, "", []):
        return k, None
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise RequestError(400, f"modalities must be a list of modality names, got {modalities!r}")
    unknown = [m for m in modalities if m not in indexed]
    if unknown:
        raise RequestError(400, f"the index holds no {', '.join(map(repr, unknown))} items; it has "
                                f"{', '.join(indexed)}")
    return k, tuple(dict.fromkeys(modalities))
