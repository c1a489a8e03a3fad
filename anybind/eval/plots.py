"""Figures of an evaluation (matplotlib, Agg backend): the retrieval heatmap, a confusion matrix, R@K curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_retrieval_heatmap(metrics: Mapping[str, Any], path: str | Path, metric: str = "R@1") -> Path:
    """Save a query x gallery heatmap of ``metric``; emergent pairs (never trained together) are hatched and starred."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_confusion_matrix(cm: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One confusion matrix (rows = true class, normalized to fractions; counts written in small matrices)."""
    plt = _pyplot()
    n = len(class_names)
    side = min(16.0, 3.0 + 0.28 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    frac = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    im = ax.imshow(frac.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    if n <= 20:
        for r in range(n):
            for c in range(n):
                if cm[r, c]:
                    ax.text(c, r, str(int(cm[r, c])), ha="center", va="center", fontsize=7,
                            color="white" if frac[r, c] > 0.6 else "black")
    fontsize = 8 if n <= 20 else max(4, int(9 - n / 10))
    ax.set_xticks(range(n), list(class_names), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), list(class_names), fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_recall_curves(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "",
                       chance: Mapping[str, Sequence[float]] | None = None) -> Path:
    """R@K against K (log scale) for each direction (``"text->audio": [R@1, R@2, ...]``); dashed: chance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for name, ys in curves.items():
        ks = range(1, len(ys) + 1)
        line, = ax.plot(ks, ys, label=name, lw=1.8)
        if chance and name in chance:
            ax.plot(range(1, len(chance[name]) + 1), chance[name], ls="--", lw=1.0, color=line.get_color(),
                    label=f"{name} (chance)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
