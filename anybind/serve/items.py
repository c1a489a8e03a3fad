"""The items of a served index: names (``"modality:id"``, or a bare id unique in the index), media and vectors.

The service only ever opens files that the index lists; nothing a request says is ever used as a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..retrieval.index import Index, normalize
from .queries import RequestError


class ItemCatalog:
    """Looks up the items of ``index`` by name and reads what the index holds about them."""

    def __init__(self, index: Index):
        self.index = index
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
