"""Any-to-any search: embed one or several queries (any modality), combine them, look them up in an index.

Several queries combine by weighted embedding arithmetic: ``normalize(sum_i w_i * embed(q_i))``, so
``image:cat.png`` plus ``text:"on grass"`` at weight 0.5 finds things like the picture, nudged towards the text.

:func:`cross_modal_search` (what ``anybind-search`` does by default) returns the top hits of every modality other
than the query's own: the nearest neighbours of a caption are mostly other captions, which is rarely what a
search across modalities is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError, RegistryError
from ..modality import get_modality, list_modalities, modality_for_path
from .index import Hit, Index, normalize

Query = tuple[str, Any]
Queries = Mapping[str, Any] | Sequence[Query | str] | str  # what as_queries accepts


def looks_like_path(spec: str) -> bool:
    """Whether a query string reads as a file name rather than words: one line, and either a leading ``/``,
    ``./``, ``../`` or ``~`` (or a drive letter), or, with no space in it, a suffix that a modality claims
    (``dog.wav``)."""
    s = spec.strip()
    if not s or "\n" in s:
        return False
    if s.startswith(("/", "./", "../", "~", ".\\", "..\\")) or (len(s) > 2 and s[1] == ":" and s[2] in "/\\"):
        return True
    suffix = Path(s).suffix.lower()
    return " " not in s and bool(suffix) and any(suffix in get_modality(m).extensions for m in list_modalities())


def parse_query(spec: str) -> Query:
    """``"image:cat.png"`` -> ``("image", "cat.png")``; ``"cat.png"`` infers the modality; other text is a text query.

    A string that looks like a path (:func:`looks_like_path`) but names no file raises :class:`InputError` instead of
    quietly searching for its characters as text (``"text:..."`` searches for any string as text).
    """
    head, sep, rest = spec.partition(":")
    if sep and head in list_modalities():
        return head, rest  # a missing file is reported when the query is embedded, naming it
    path = Path(spec).expanduser()
    if path.is_file():
        return modality_for_path(path), str(path)
    if looks_like_path(spec):
        problem = "is a folder, not a file" if path.is_dir() else "looks like a file path, but there is no such file"
        try:
            guess = modality_for_path(spec)
        except InputError:
            guess = "query"
        raise InputError(spec, guess, f"{problem} (to search for these characters as words, write text:{spec})")
    return "text", spec


def as_queries(queries: Queries) -> list[Query]:
    """Accept ``{"image": "cat.png", "text": "on grass"}``, ``[("image", x), ...]``, ``["image:cat.png", ...]`` or a string."""
    if isinstance(queries, str):
        return [parse_query(queries)]
    if isinstance(queries, Mapping):
        return [(m, q) for m, q in queries.items()]
    out = []
    for q in queries:
        out.append(parse_query(q) if isinstance(q, str) else (str(q[0]), q[1]))
    return out


@torch.no_grad()
def embed_queries(model, queries: Sequence[Query]) -> np.ndarray:
    """``(len(queries), D)`` unit vectors, in order; a file that cannot be read raises :class:`InputError`."""
    out = np.empty((len(queries), model.embed_dim), dtype=np.float32)
    by_mod: dict[str, list[int]] = {}
    for i, (m, _) in enumerate(queries):
        if m not in model.modalities:
            raise RegistryError(f"query {i} is {m!r} but the model has no {m} tower (it has {', '.join(model.modalities)})")
        by_mod.setdefault(m, []).append(i)
    for m, idx in by_mod.items():
        z = model.embed({m: [queries[i][1] for i in idx]}, progress=False)[m]
        out[idx] = z.numpy()
    return out


def combine(vectors: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted sum of unit vectors, renormalized: the query of an arithmetic search. ``(D,)``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    w = np.ones(len(vectors), np.float32) if weights is None else np.asarray(list(weights), dtype=np.float32)
    if len(w) != len(vectors):
        raise ValueError(f"{len(vectors)} queries but {len(w)} weights; give one weight per query (or none)")
    v = (w[:, None] * vectors).sum(0)
    if not np.isfinite(v).all() or np.linalg.norm(v) < 1e-6:
        raise ValueError("the weighted query vectors cancel out (sum is ~0); change the weights")
    return normalize(v[None])[0]


def _query_vector(model, index: Index, queries, weights) -> tuple[list[Query], np.ndarray]:
    qs = as_queries(queries)
    if not qs:
        raise ValueError("search needs at least one query")
    if model.embed_dim != index.embed_dim:
        raise ValueError(f"model embeds to {model.embed_dim} dims but the index holds {index.embed_dim}-d vectors")
    return qs, combine(embed_queries(model, qs), weights)


def search(model, index: Index, queries: Queries, weights: Sequence[float] | None = None, k: int = 10,
           modalities: Iterable[str] | None = None) -> list[Hit]:
    """Top-``k`` hits for one (possibly composite) query, restricted to target ``modalities`` when given."""
    _, vec = _query_vector(model, index, queries, weights)
    return index.search(vec[None], k=k, modalities=modalities)[0]


def cross_modal_targets(index: Index, query_modalities: Iterable[str]) -> tuple[list[str], str]:
    """The modalities a default search looks in: every one the index holds except the queries' own (all of them when
    the index holds nothing else), and a sentence saying so."""
    own = list(dict.fromkeys(query_modalities))
    others = [m for m in index.modalities if m not in own]
    if others:
        return others, (f"top hits per modality other than the query's own ({', '.join(own)}): {', '.join(others)}; "
                        "--target MODALITY to choose, --target all for one ranking over every modality")
    return list(index.modalities), (f"the index holds only {', '.join(index.modalities) or 'nothing'}, the query's "
                                    "own modality, so these hits are of the same modality")


def cross_modal_search(model, index: Index, queries: Queries, weights: Sequence[float] | None = None, k: int = 10,
                       modalities: Iterable[str] | None = None) -> dict[str, list[Hit]]:
    """The top ``k`` hits *per modality*, ``{modality: hits}``, for every modality of the index other than the
    queries' own (or ``modalities``). What ``anybind-search`` shows by default: a caption finds images, sounds,
    videos and point clouds rather than the captions nearest to it."""
    qs, vec = _query_vector(model, index, queries, weights)
    targets = list(modalities) if modalities is not None else cross_modal_targets(index, [m for m, _ in qs])[0]
    return {m: index.search(vec[None], k=k, modalities=[m])[0] for m in targets if m in index.parts}


def contact_sheet(hits: Sequence[Hit] | Mapping[str, Sequence[Hit]], path: str | Path, *, tile: int = 160,
                  columns: int = 5, title: str | None = None) -> Path:
    """A PNG grid of the hits (:func:`anybind.retrieval.sheet.contact_sheet`); a ``{modality: hits}`` mapping gives
    each modality its own rows."""
    from .sheet import contact_sheet as draw

    return draw(hits, path, tile=tile, columns=columns, title=title)
