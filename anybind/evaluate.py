"""Retrieval and zero-shot metrics in the shared embedding space, and the ``metrics.json`` they are written to.

Retrieval: for every ordered pair of modalities ``q->g``, each ``q`` embedding queries all ``g`` embeddings by cosine
similarity; a *hit* is a gallery item with the same match key (the label when samples have one, else the sample
id). ``R@k`` is the fraction of queries (0..1) whose first hit ranks within the top ``k``; ``MdR`` the median rank of
the first hit. Ties are counted against the query (a collapsed model that maps everything to one point scores 0,
not 1). Queries with no hit anywhere in the gallery are left out; ``n`` counts the queries scored. ``emergent`` is
true for pairs that were never trained together, e.g. ``audio->text`` when only image-audio and image-text were.

Layout written by :func:`write_metrics` (ARCHITECTURE contract 3)::

    {"retrieval": {"audio->text": {"R@1": .., "R@5": .., "R@10": .., "MdR": .., "n": .., "emergent": true}, ...},
     "zero_shot": {"<dataset>/<modality>": {"top1": .., "top5": .., "n": ..}}, ...}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import atomic_write_json


def _codes(*key_lists: Sequence[Hashable]) -> list[torch.Tensor]:
    table: dict[Hashable, int] = {}
    return [torch.tensor([table.setdefault(k, len(table)) for k in keys], dtype=torch.long) for keys in key_lists]


def first_hit_ranks(
    query: torch.Tensor, gallery: torch.Tensor, query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable],
    *, chunk: int = 1024,
) -> torch.Tensor:
    """1-based rank of the first gallery item sharing each query's key (ties count against); 0 = no such item."""
    if len(query_keys) != len(query) or len(gallery_keys) != len(gallery):
        raise ValueError(f"keys ({len(query_keys)}, {len(gallery_keys)}) do not match embeddings ({len(query)}, {len(gallery)})")
    qk, gk = _codes(query_keys, gallery_keys)
    q, g = F.normalize(query.float(), dim=-1), F.normalize(gallery.float(), dim=-1)
    ranks = torch.zeros(len(q), dtype=torch.long)
    for lo in range(0, len(q), chunk):
        sims = q[lo:lo + chunk] @ g.T
        rel = qk[lo:lo + chunk, None] == gk[None, :]
        best = sims.masked_fill(~rel, float("-inf")).amax(dim=1, keepdim=True)
        beaten = ((sims >= best) & ~rel).sum(dim=1)
        ranks[lo:lo + chunk] = torch.where(rel.any(dim=1), beaten + 1, torch.zeros_like(beaten))
    return ranks


def _recall(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    scored = ranks[ranks > 0]
    out: dict[str, float] = {}
    for k in ks:
        # hits / n in Python floats: a float32 mean makes 180 hits of 200 0.89999998, which fails a ">= 0.9" check
        out[f"R@{k}"] = int((scored <= k).sum()) / len(scored) if len(scored) else float("nan")
    out["MdR"] = float(scored.float().median()) if len(scored) else float("nan")
    out["n"] = int(len(scored))
    return out


def retrieval_metrics(
    embeddings: Mapping[str, torch.Tensor],
    keys: Mapping[str, Sequence[Hashable]],
    trained_pairs: Iterable[frozenset] = (),
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[str, Any]]:
    """``{"q->g": {"R@1", "R@5", "R@10", "MdR", "n", "emergent"}}`` for every ordered pair of modalities."""
    trained = {frozenset(p) for p in trained_pairs}
    out = {}
    mods = list(embeddings)
    for q in mods:
        for g in mods:
            if q == g:
                continue
            ranks = first_hit_ranks(embeddings[q], embeddings[g], keys[q], keys[g])
            out[f"{q}->{g}"] = {**_recall(ranks, ks), "emergent": frozenset((q, g)) not in trained}
    return out


def zero_shot_metrics(
    query_emb: torch.Tensor,
    class_text_emb: torch.Tensor,
    query_labels: Sequence[Hashable],
    class_names: Sequence[Hashable],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float | int]:
    """Classify each query by its most similar class embedding: ``{"top1", "top5", "n"}`` (fractions 0..1).

    Queries whose label is not among ``class_names`` are left out of ``n``. With fewer than 5 classes top5 is
    top-(number of classes).
    """
    if len(class_text_emb) != len(class_names):
        raise ValueError(f"{len(class_text_emb)} class embeddings for {len(class_names)} class names")
    index = {c: i for i, c in enumerate(class_names)}
    keep = [i for i, lab in enumerate(query_labels) if lab in index]
    out: dict[str, float | int] = {}
    if not keep or not len(class_names):
        return {**{f"top{k}": float("nan") for k in ks}, "n": 0}
    q = F.normalize(query_emb[keep].float(), dim=-1)
    c = F.normalize(class_text_emb.float(), dim=-1)
    target = torch.tensor([index[query_labels[i]] for i in keep])
    order = (q @ c.T).argsort(dim=1, descending=True)
    for k in ks:
        out[f"top{k}"] = int((order[:, :k] == target[:, None]).any(dim=1).sum()) / len(keep)
    out["n"] = len(keep)
    return out


@torch.no_grad()
def embed_manifest(
    model,
    manifest,
    modalities: Sequence[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    *,
    match_key: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    autocast: bool = False,
    errors: list | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Embed every sample of ``manifest`` (a path or a :class:`~anybind.data.manifest.Manifest`) per modality.

    Returns ``(embeddings, keys)``: modality -> ``(N_m, D)`` float32 unit vectors on the CPU, and modality -> the
    match key of each row (see :meth:`Sample.key`). Samples that fail to load are skipped (appended to ``errors``
    when a list is given). ``modalities`` defaults to every modality of the model that the manifest has.
    """
    from torch.utils.data import DataLoader

    from .data.dataset import ManifestDataset, worker_init
    from .data.manifest import Manifest, load_manifest

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if split is not None or limit is not None:
        manifest = manifest.select(split, limit=limit)
    mods = [m for m in (modalities or model.modalities) if m in manifest.modalities()]
    encoders = getattr(model, "encoders", model)
    device = next(iter(encoders.parameters())).device
    ds = ManifestDataset(manifest, {m: encoders[m].input_contract for m in mods})
    was_training = model.training
    model.eval()
    embeddings, keys = {}, {}
    try:
        for m in mods:
            items = [(i, (m,), (m,)) for i in manifest.indices_with(m)]
            batches = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
            loader = DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate, num_workers=num_workers,
                                worker_init_fn=worker_init if num_workers else None, pin_memory=device.type == "cuda")
            chunks, row_keys = [], []
            for batch in loader:
                if errors is not None:
                    errors.extend(batch["errors"])
                if m not in batch["inputs"]:
                    continue
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    z = encoders[m](batch["inputs"][m].to(device, non_blocking=True))
                chunks.append(F.normalize(z.float(), dim=-1).cpu())
                row_keys += [manifest[int(i)].key(match_key) for i, ok in zip(batch["index"], batch["valid"][m]) if ok]
            if chunks:
                embeddings[m], keys[m] = torch.cat(chunks), row_keys
    finally:
        model.train(was_training)
    return embeddings, keys


def write_metrics(run_dir: str | Path, metrics: Mapping[str, Any], name: str = "metrics.json") -> Path:
    """Write ``metrics`` to ``run_dir/metrics.json`` atomically (NaN becomes null, so the file is strict JSON)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, Mapping):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path = Path(run_dir) / name
    atomic_write_json(path, clean(dict(metrics)))
    return path


def plot_retrieval_heatmap(metrics: Mapping[str, Any], path: str | Path, metric: str = "R@1") -> Path:
    """Save a query x gallery heatmap of ``metric``; emergent pairs (never trained together) are hatched and starred."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    table = metrics.get("retrieval", metrics)
    pairs = {tuple(k.split("->")): v for k, v in table.items() if "->" in k}
    mods = list(dict.fromkeys([q for q, _ in pairs] + [g for _, g in pairs]))
    grid = torch.full((len(mods), len(mods)), float("nan"))
    for (q, g), v in pairs.items():
        val = v.get(metric)
        grid[mods.index(q), mods.index(g)] = float("nan") if val is None else float(val)
    fig, ax = plt.subplots(figsize=(1.2 * len(mods) + 2.5, 1.1 * len(mods) + 1.5))
    vmax = None if metric == "MdR" else 1.0
    im = ax.imshow(grid.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
    for (q, g), v in pairs.items():
        r, c = mods.index(q), mods.index(g)
        val = grid[r, c].item()
        text = "-" if math.isnan(val) else (f"{val:.0f}" if metric == "MdR" else f"{val:.2f}")
        if v.get("emergent"):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="//", edgecolor="white", lw=1.5))
            text += "*"
        ax.text(c, r, text, ha="center", va="center", color="white" if math.isnan(val) or val < 0.6 else "black")
    ax.set_xticks(range(len(mods)), mods, rotation=30)
    ax.set_yticks(range(len(mods)), mods)
    ax.set_xlabel("gallery")
    ax.set_ylabel("query")
    ax.set_title(f"retrieval {metric} (* hatched = emergent: never trained together)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_model(
    model,
    manifest,
    *,
    modalities: Sequence[str] | None = None,
    trained_pairs: Iterable[frozenset] = (),
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    match_key: str | None = None,
    zero_shot: bool = True,
    prompt: str = "{}",
    dataset_name: str = "data",
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Embed a manifest and score it: ``{"retrieval": ..., "zero_shot": ..., "eval_samples": n, "eval_errors": [...]}``.

    Zero-shot runs when the model has a text tower and every evaluated sample has a label: each other modality is
    classified among the labels' prompts (``prompt.format(label)``), reported as ``"<dataset_name>/<modality>"``.
    """
    from .data.manifest import Manifest, load_manifest

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    manifest = manifest.select(split, limit=limit)
    errors: list = []
    emb, ids = embed_manifest(model, manifest, modalities, batch_size, num_workers, match_key="id", errors=errors)
    by_id = {s.id: s for s in manifest}
    keys = {m: [by_id[i].key(match_key) for i in rows] for m, rows in ids.items()}
    out: dict[str, Any] = {"retrieval": retrieval_metrics(emb, keys, trained_pairs, ks), "zero_shot": {}}
    labels = sorted({s.label for s in manifest if s.label is not None})
    if zero_shot and "text" in getattr(model, "modalities", []) and labels and all(s.label is not None for s in manifest):
        class_emb = model.embed({"text": [prompt.format(c) for c in labels]}, batch_size=batch_size)["text"]
        for m, rows in ids.items():
            if m != "text":
                out["zero_shot"][f"{dataset_name}/{m}"] = zero_shot_metrics(
                    emb[m], class_emb, [by_id[i].label for i in rows], labels)
    out["eval_samples"] = len(manifest)
    out["eval_errors"] = [{"id": sid, "modality": m, "error": msg} for sid, m, msg in errors[:20]]
    return out
