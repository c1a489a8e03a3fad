"""``anybind-demo``: the embedded default, end to end, offline, in minutes on a laptop CPU.

1. **world**: :func:`anybind.data.world.generate_world` writes (or reuses) a seeded five-modality world: PNG
   images, captions, WAV sounds, MP4 videos and coloured point clouds of one object each (docs/world.md);
2. **anchor** (``experiment=world_anchor``): image and text towers learn from image-caption pairs;
3. **bind** (``experiment=world_bind``): the image and text towers come frozen from stage 1; audio, video and point
   cloud towers each learn to land next to the image of their sample. No audio-text, video-text, points-text,
   audio-video, audio-points or video-points pair is ever trained;
4. **evaluate** on the test split and on the held-out attribute combinations (never seen in training): R@1 of every
   ordered pair of the five modalities, where a hit is a result with the same four attributes; ``*`` marks the
   emergent pairs.

``OUT`` (default ``runs/demo``) gets ``anchor/`` and ``bind/`` (each a normal training run directory),
``metrics.json`` (ARCHITECTURE contract 3, plus ``heldout``, ``chance`` and ``timing``), ``retrieval_R@1.png``
(the heatmap of the table) and ``examples.png`` (a sound's top-3 images, a point cloud's top-3 captions, a caption's
top-3 videos). Extra ``--anchor KEY=VALUE`` / ``--bind KEY=VALUE`` arguments are Hydra overrides of the stages.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from .train.pipeline import StageClock, run_stage

log = logging.getLogger("anybind.demo")

MODALITIES = ("image", "text", "audio", "video", "points")
ANCHOR_EXPERIMENT, BIND_EXPERIMENT = "world_anchor", "world_bind"
TARGETS = {"trained_R@1": 0.9, "emergent_R@1": 0.6, "emergent_x_chance": 10.0, "wall_s": 600.0}


def default_world_dir() -> Path:
    """``$ANYBIND_WORLD``, else ``data/world`` (the folder the world experiments read)."""
    return Path(os.environ.get("ANYBIND_WORLD", "data/world"))


def chance_at_1(query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable]) -> float:
    """R@1 of a ranking drawn at random: the mean, over queries with a hit, of the share of the gallery that hits."""
    counts = Counter(gallery_keys)
    shares = [counts[k] / len(gallery_keys) for k in query_keys if k in counts]
    return sum(shares) / len(shares) if shares else float("nan")


def score(model, manifest: str | Path, trained_pairs, batch_size: int = 128) -> dict[str, Any]:
    """Embed every modality of ``manifest`` once; R@k of every ordered pair (label = match key) and its chance R@1.

    Returns ``{"retrieval": {...}, "chance": {"q->g": r1}, "embeddings": {m: (N, D)}, "ids": {m: [id, ...]}}``.
    """
    from .data.manifest import load_manifest
    from .eval import embed_manifest, retrieval_metrics

    rows = load_manifest(manifest)
    errors: list = []
    emb, ids = embed_manifest(model, rows, batch_size=batch_size, match_key="id", errors=errors)
    if errors:
        log.warning("%s: %d samples could not be read and are left out: %s", manifest, len(errors), errors[:3])
    by_id = {s.id: s for s in rows}
    keys = {m: [by_id[i].label for i in row_ids] for m, row_ids in ids.items()}
    ret = retrieval_metrics(emb, keys, trained_pairs)
    chance = {name: chance_at_1(keys[name.split("->")[0]], keys[name.split("->")[1]]) for name in ret}
    return {"retrieval": ret, "chance": chance, "embeddings": emb, "ids": ids, "errors": len(errors)}


def format_table(retrieval: Mapping[str, Mapping[str, Any]], metric: str = "R@1",
                 modalities: Sequence[str] = MODALITIES) -> str:
    """A query x gallery text table of ``metric``; ``*`` marks emergent pairs (never trained together)."""
    mods = [m for m in modalities if any(k.startswith(f"{m}->") or k.endswith(f"->{m}") for k in retrieval)]
    width = max(8, *(len(m) + 1 for m in mods))
    lines = ["query \\ gallery".ljust(16) + "".join(m.rjust(width) for m in mods)]
    for q in mods:
        cells = []
        for g in mods:
            r = retrieval.get(f"{q}->{g}")
            if q == g or r is None or r.get(metric) is None:
                cells.append("- ".rjust(width))  # aligned with the numbers, whose last column holds the *
            else:
                cells.append((f"{r[metric]:.2f}" + ("*" if r.get("emergent") else " ")).rjust(width))
        lines.append(q.ljust(16) + "".join(cells))
    return "\n".join(lines)


def summarize(retrieval: Mapping[str, Mapping[str, Any]], chance: Mapping[str, float]) -> dict[str, Any]:
    """Worst trained and emergent R@1 and the smallest emergent R@1 / chance ratio, checked against the targets."""
    trained = {k: v["R@1"] for k, v in retrieval.items() if not v["emergent"]}
    emergent = {k: v["R@1"] for k, v in retrieval.items() if v["emergent"]}
    ratio = {k: v / chance[k] for k, v in emergent.items() if chance.get(k)}
    out: dict[str, Any] = {
        "trained_min_R@1": min(trained.values(), default=float("nan")),
        "trained_mean_R@1": sum(trained.values()) / max(1, len(trained)),
        "emergent_min_R@1": min(emergent.values(), default=float("nan")),
        "emergent_mean_R@1": sum(emergent.values()) / max(1, len(emergent)),
        "emergent_min_x_chance": min(ratio.values(), default=float("nan")),
        "chance_R@1": sum(chance.values()) / max(1, len(chance)),
    }
    out["met"] = {
        "trained_R@1": out["trained_min_R@1"] >= TARGETS["trained_R@1"],
        "emergent_R@1": out["emergent_min_R@1"] >= TARGETS["emergent_R@1"],
        "emergent_x_chance": out["emergent_min_x_chance"] >= TARGETS["emergent_x_chance"],
    }
    return out


# ------------------------------------------------------------------------------------------------- figures
def _show_text(ax, text: str, color: str = "black") -> None:
    import textwrap

    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 22)), ha="center", va="center", fontsize=9, color=color,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _show(ax, modality: str, item: str) -> None:
    """Draw one manifest item (a path, or for text the caption): image, three video frames, sound spectrogram,
    point cloud seen from the front, or caption."""
    import numpy as np

    if modality == "text":
        _show_text(ax, item)
        return
    path = Path(item)
    if modality == "image":
        from PIL import Image

        ax.imshow(np.asarray(Image.open(path).convert("RGB")))
    elif modality == "video":
        from .data.readers import read_video

        with read_video(path) as src:
            n = len(src)
            frames = src.get_frames([0, n // 2, n - 1]).numpy()
        ax.imshow(np.concatenate(list(frames), axis=1))
    elif modality == "audio":
        import soundfile as sf

        wav, sr = sf.read(str(path), dtype="float32")
        ax.specgram(wav if wav.ndim == 1 else wav.mean(1), NFFT=512, Fs=sr, noverlap=384, cmap="magma")
        ax.set_ylim(0, 4000)
    elif modality == "points":
        pts = np.load(path)
        ax.scatter(pts[:, 0], pts[:, 1], c=np.clip(pts[:, 3:6], 0, 1) if pts.shape[1] >= 6 else "k", s=2)
        ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(result: Mapping[str, Any], manifest: str | Path, path: str | Path,
                  rows: Sequence[tuple[str, str]] = (("audio", "image"), ("points", "text"), ("text", "video")),
                  k: int = 3, trained_pairs=()) -> Path:
    """One row per (query modality, gallery modality): the query, then its top-``k`` results, green when a hit."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .data.manifest import load_manifest

    samples = {s.id: s for s in load_manifest(manifest)}
    emb, ids = result["embeddings"], result["ids"]
    trained = {frozenset(p) for p in trained_pairs}
    rows = [(q, g) for q, g in rows if q in emb and g in emb]
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(2.6 * (k + 1), 2.6 * len(rows)), squeeze=False)
    for r, (q, g) in enumerate(rows):
        qi = r * 7 % len(ids[q])  # a different object per row
        query = samples[ids[q][qi]]
        top = (emb[q][qi] @ emb[g].T).topk(k).indices.tolist()
        _show(axes[r][0], q, query.items[q])
        kind = "trained" if frozenset((q, g)) in trained else "emergent"
        axes[r][0].set_title(f"{q} query ({kind} {q}->{g})\n{query.label}", fontsize=8)
        for c, j in enumerate(top, start=1):
            hit = samples[ids[g][j]]
            ok = hit.label == query.label
            _show(axes[r][c], g, hit.items[g])
            axes[r][c].set_title(f"#{c} {hit.label}", fontsize=8, color="green" if ok else "red")
            for spine in axes[r][c].spines.values():
                spine.set_edgecolor("green" if ok else "red")
                spine.set_linewidth(2.5)
    fig.suptitle("anybind-demo: example retrievals on the test split (green = same four attributes)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------- run
def run_demo(world_dir: str | Path | None = None, out_dir: str | Path = "runs/demo", *,
             anchor_overrides: Sequence[str] = (), bind_overrides: Sequence[str] = (),
             world: Mapping[str, Any] | None = None, examples: bool = True) -> dict[str, Any]:
    """World -> anchor stage -> bind stage -> evaluation; returns the metrics written to ``OUT/metrics.json``.

    ``world`` holds :func:`~anybind.data.world.generate_world` arguments (sizes of the splits, seed, ...).
    """
    from .checkpoint import load
    from .data.world import generate_world
    from .eval import plot_retrieval_heatmap, write_metrics

    root = Path(world_dir or default_world_dir()).resolve()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("demo")

    with clock("world"):
        info = generate_world(root, **dict(world or {}))
        log.info("world %s (%s): %s", root, "reused" if info.reused else "generated", info.counts)
    data = [f"data.manifest={info.manifests['train']}", f"data.val_manifest={info.manifests['val']}"]

    with clock("anchor"):
        anchor = run_stage(ANCHOR_EXPERIMENT, out / "anchor", [*data, *anchor_overrides])
    with clock("bind"):
        bind = run_stage(BIND_EXPERIMENT, out / "bind",
                         [*data, f"init_from={anchor.checkpoint_path}", *bind_overrides])

    with clock("evaluate"):
        model = load(bind.checkpoint_path)
        pairs = [list(p) for p in model.checkpoint_meta.get("trained_pairs", [])]
        trained = {frozenset(p) for p in pairs}
        test = score(model, info.manifests["test"], trained)
        metrics: dict[str, Any] = {
            "retrieval": test["retrieval"], "chance": test["chance"],
            "summary": summarize(test["retrieval"], test["chance"]), "trained_pairs": sorted(sorted(p) for p in pairs),
            "match_key": "label (color-shape-size-motion)", "world": str(root), "world_counts": info.counts,
        }
        if info.counts.get("test_heldout"):
            held = score(model, info.manifests["test_heldout"], trained)
            metrics["heldout"] = {"retrieval": held["retrieval"], "chance": held["chance"],
                                  "summary": summarize(held["retrieval"], held["chance"]),
                                  "combinations": info.heldout_combinations}
        plot_retrieval_heatmap(metrics, out / "retrieval_R@1.png")
        if examples:
            plot_examples(test, info.manifests["test"], out / "examples.png", trained_pairs=pairs)
    metrics["timing"] = clock.report()
    metrics["targets"] = dict(TARGETS)
    metrics["runs"] = {"anchor": str(anchor.run_dir), "bind": str(bind.run_dir)}
    write_metrics(out, metrics)
    return metrics


def report(metrics: Mapping[str, Any], out_dir: str | Path) -> str:
    """The text ``anybind-demo`` prints: both tables, chance, targets, timing and where the files are."""
    s = metrics["summary"]
    lines = [f"any-to-any retrieval R@1, test split ({metrics['retrieval']['image->text']['n']} samples; "
             f"* = emergent: never trained together; chance R@1 ~{s['chance_R@1']:.3f})", "",
             format_table(metrics["retrieval"]), ""]
    if "heldout" in metrics:
        h = metrics["heldout"]
        lines += [f"held-out attribute combinations ({len(h['combinations'])} combinations never seen in training, "
                  f"{h['retrieval']['image->text']['n']} samples; chance ~{h['summary']['chance_R@1']:.3f})", "",
                  format_table(h["retrieval"]), ""]
    met = s["met"]
    lines.append(f"trained pairs: min R@1 {s['trained_min_R@1']:.3f} (target >= {TARGETS['trained_R@1']}: "
                 f"{'met' if met['trained_R@1'] else 'NOT met'})")
    lines.append(f"emergent pairs: min R@1 {s['emergent_min_R@1']:.3f} (target >= {TARGETS['emergent_R@1']}: "
                 f"{'met' if met['emergent_R@1'] else 'NOT met'}); min {s['emergent_min_x_chance']:.0f}x chance "
                 f"(target >= {TARGETS['emergent_x_chance']:.0f}x: {'met' if met['emergent_x_chance'] else 'NOT met'})")
    t = metrics["timing"]
    stages = ", ".join(f"{k} {t[k]['wall_s']:.0f} s" for k in ("world", "anchor", "bind", "evaluate") if k in t)
    within = t["total"]["wall_s"] <= TARGETS["wall_s"]
    lines.append(f"time: {t['total']['wall_s']:.0f} s wall ({stages}; target <= {TARGETS['wall_s']:.0f} s: "
                 f"{'met' if within else 'NOT met'}); {t['total']['cpu_s']:.0f} s CPU on {t['cpu_count']} cores, "
                 f"load average {t['total']['load_avg']}")
    out = Path(out_dir)
    lines.append(f"wrote {out / 'metrics.json'}, {out / 'retrieval_R@1.png'}, {out / 'examples.png'}; "
                 f"model {metrics['runs']['bind']}/checkpoints/last.safetensors")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``anybind-demo``: world -> anchor -> bind -> evaluate (see the module docstring)."""
    from .console import ArgumentParser  # one-line errors, --debug

    ap = ArgumentParser(prog="anybind-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=None, help="world folder, generated when missing (default: $ANYBIND_WORLD "
                                                  "or data/world)")
    ap.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    ap.add_argument("--anchor", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the anchor stage")
    ap.add_argument("--bind", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the bind stage")
    ap.add_argument("--no-examples", action="store_true", help="skip examples.png")
    a = ap.parse_args(argv)
    # anybind's progress at INFO; other libraries (the tokenizer announces itself on every load) at WARNING
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s] %(message)s")
    logging.getLogger("anybind").setLevel(logging.INFO)
    m = run_demo(a.world, a.out, anchor_overrides=a.anchor, bind_overrides=a.bind, examples=not a.no_examples)
    print()
    print(report(m, a.out))


if __name__ == "__main__":
    main()
