"""Any-to-any search: embed one or several queries (any modality), combine them, look them up in an index.

Several queries combine by weighted embedding arithmetic: ``normalize(sum_i w_i * embed(q_i))``, so
``image:cat.png`` plus ``text:"on grass"`` at weight 0.5 finds things like the picture, nudged towards the text.
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


def parse_query(spec: str) -> Query:
    """``"image:cat.png"`` -> ``("image", "cat.png")``; ``"cat.png"`` infers the modality; other text is a text query."""
    head, sep, rest = spec.partition(":")
    if sep and head in list_modalities():
        return head, rest
    if Path(spec).is_file():
        return modality_for_path(spec), spec
    return "text", spec


def as_queries(queries: Mapping[str, Any] | Sequence[Query | str] | str) -> list[Query]:
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


def search(
    model,
    index: Index,
    queries: Mapping[str, Any] | Sequence[Query | str] | str,
    weights: Sequence[float] | None = None,
    k: int = 10,
    modalities: Iterable[str] | None = None,
) -> list[Hit]:
    """Top-``k`` hits for one (possibly composite) query, restricted to target ``modalities`` when given."""
    qs = as_queries(queries)
    if not qs:
        raise ValueError("search needs at least one query")
    if model.embed_dim != index.embed_dim:
        raise ValueError(f"model embeds to {model.embed_dim} dims but the index holds {index.embed_dim}-d vectors")
    vec = combine(embed_queries(model, qs), weights)
    return index.search(vec[None], k=k, modalities=modalities)[0]


def _tile_image(hit: Hit, size: int):
    from PIL import Image

    if hit.source and hit.modality == "image":
        img = get_modality("image").read(hit.source)
        return img.convert("RGB")
    if hit.source and hit.modality == "video":
        video = get_modality("video").read(hit.source)
        frame = video.get_frames([max(0, int(video.num_frames) // 2)])[0]
        return Image.fromarray(frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)).convert("RGB")
    return None


def contact_sheet(hits: Sequence[Hit], path: str | Path, *, tile: int = 160, columns: int = 5, title: str | None = None) -> Path:
    """A PNG grid of the hits (images; videos by their middle frame; other modalities as a text card)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    caption_h = 30
    cols = max(1, min(columns, len(hits) or 1))
    rows = max(1, -(-len(hits) // cols))
    top = 20 if title else 0
    sheet = Image.new("RGB", (cols * tile, top + rows * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title[:120], fill="black", font=font)
    for n, hit in enumerate(hits):
        x, y = (n % cols) * tile, top + (n // cols) * (tile + caption_h)
        try:
            img = _tile_image(hit, tile)
        except (InputError, OSError) as exc:
            img, note = None, f"unreadable: {exc}"
        else:
            note = None
        if img is not None:  # fit the tile, enlarging small images too
            scale = (tile - 4) / max(img.width, img.height)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
            sheet.paste(img, (x + (tile - img.width) // 2, y + (tile - img.height) // 2))
        else:
            text = note or (hit.meta.get("text") or hit.source or hit.id)
            draw.rectangle([x + 2, y + 2, x + tile - 3, y + tile - 3], outline="grey")
            draw.text((x + 6, y + 6), f"[{hit.modality}]", fill="black", font=font)
            for i, line in enumerate(_wrap(str(text), 24)[:8]):
                draw.text((x + 6, y + 22 + 14 * i), line, fill="black", font=font)
        name = Path(hit.source).name if hit.source and hit.modality != "text" else hit.id
        draw.text((x + 4, y + tile + 2), f"{n + 1}. {hit.score:.3f}", fill="black", font=font)
        draw.text((x + 4, y + tile + 15), name[:26], fill="dimgray", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines or [text[:width]]
