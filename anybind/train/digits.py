"""The real-data recipe: spoken digits classified through text, although no audio-text pair was ever trained.

``python -m anybind.train.digits --data data/digits --out runs/digits`` runs, in one process:

1. **prepare** (when ``DATA/digits.json`` is missing, or records other parameters than this run asks for, e.g.
   ``--heldout-speakers``): :func:`anybind.data.digits.prepare_digits` from the FSDD recordings and MNIST idx files
   (``--fsdd``, ``--mnist``; default ``../shared/data``);
2. **anchor** (``experiment=digits_anchor``): image and text towers on MNIST images and their captions;
3. **bind** (``experiment=digits``): image and text frozen from stage 1, an audio tower trained on recordings
   paired with MNIST images of their digit;
4. **evaluate** the bound model (:func:`evaluate_digits`) on the FSDD test takes and on the held-out speakers:
   zero-shot audio and image classification through the text prompts of the ten digit words, retrieval by class
   among audio, image and text (``emergent`` marks pairs never trained together), confusion matrices.

``OUT`` gets ``anchor/`` and ``bind/`` (each a normal training run directory), ``metrics.json`` (ARCHITECTURE
contract 3, plus ``heldout``, ``prompt_ensemble`` and ``timing``), ``confusion_audio.png`` and
``retrieval_R@1.png``. Extra ``--anchor KEY=VALUE`` / ``--bind KEY=VALUE`` arguments are Hydra overrides of
the two stages (``--anchor model_size=test trainer.max_steps=4``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.digits import (CAPTION_TEMPLATES, DIGIT_WORDS, class_prompts, default_data_dir, describe_differences,
                           preparation_differences, prepare_digits)
from .pipeline import StageClock, run_stage

log = logging.getLogger("anybind.digits")

ANCHOR_EXPERIMENT, BIND_EXPERIMENT = "digits_anchor", "digits"
# --text-tower: the from-scratch text tower, or the frozen pretrained MiniLM (hf_text) as the text side
TEXT_TOWERS = {"scratch": ("digits_anchor", "digits"), "minilm": ("digits_minilm_anchor", "digits_minilm")}
PROMPT = "the number {}"
# Phrasings never used as training captions (CAPTION_TEMPLATES): what a text tower knows beyond them.
# {word} "seven", {numeral} "7", {prev} "six", {next} "eight".
UNSEEN_TEMPLATES = (
    "a voice saying {word}", "someone says {word}", "the spoken word {word}", "a recording of a person saying {word}",
    "a man says {word}", "a woman says {word}", "say {word}", "{word}!", "it sounds like {word}", "{word} spoken aloud",
    "I heard the number {word}", "a person counting: {word}", "number {numeral}", "the value {numeral}",
    "the integer {numeral}", "audio of the number {numeral}", "{numeral} ({word})", "{word}, as a number",
    "the amount {word}", "the digit {word}", "the number right after {prev}", "the number just before {next}",
    "how many? {word}", "{numeral} in words is {word}",
)
_PREV = ("minus one",) + DIGIT_WORDS[:-1]
_NEXT = DIGIT_WORDS[1:] + ("ten",)


def unseen_prompts(template: str) -> list[str]:
    """The ten class prompts of one :data:`UNSEEN_TEMPLATES` phrasing."""
    return [template.format(word=w, numeral=str(d), prev=_PREV[d], next=_NEXT[d])
            for d, w in enumerate(DIGIT_WORDS)]


@torch.no_grad()
def unseen_prompt_metrics(model, emb: torch.Tensor, keys: Sequence[str], batch_size: int = 256) -> dict[str, Any]:
    """Zero-shot top-1 of ``emb`` (labelled by digit word) with each unseen phrasing as the ten class prompts:
    ``{"per_template": {template: top1}, "mean_top1", "min_top1", "ensemble_top1", "n_templates", "n"}``."""
    every = [p for t in UNSEEN_TEMPLATES for p in unseen_prompts(t)]
    text = model.embed({"text": every}, batch_size=batch_size)["text"].view(len(UNSEEN_TEMPLATES), 10, -1)
    target = torch.tensor([DIGIT_WORDS.index(k) for k in keys])
    per = {t: float(((emb @ text[i].T).argmax(1) == target).float().mean()) for i, t in enumerate(UNSEEN_TEMPLATES)}
    ens = torch.nn.functional.normalize(text.mean(0), dim=-1)
    return {"per_template": per, "mean_top1": sum(per.values()) / len(per), "min_top1": min(per.values()),
            "ensemble_top1": float(((emb @ ens.T).argmax(1) == target).float().mean()),
            "n_templates": len(per), "n": len(target)}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class."""
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long)
    cm.index_add_(0, target.long() * num_classes + pred.long(), torch.ones_like(target, dtype=torch.long))
    return cm.view(num_classes, num_classes)


def plot_confusion(matrices: dict[str, torch.Tensor], path: str | Path, labels: Sequence[str] = DIGIT_WORDS) -> Path:
    """Side-by-side confusion matrices (``title -> counts``), each row normalized to the fraction of its class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(5.2 * len(matrices), 4.8), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        frac = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
        ax.imshow(frac.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        for r in range(len(labels)):
            for c in range(len(labels)):
                if cm[r, c]:
                    ax.text(c, r, str(int(cm[r, c])), ha="center", va="center", fontsize=7,
                            color="white" if frac[r, c] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted (nearest text prompt)")
        ax.set_ylabel("spoken digit")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def evaluate_digits(model, manifest, *, trained_pairs=(), prompt: str = PROMPT, dataset: str = "fsdd",
                    image_dataset: str = "mnist", batch_size: int = 256) -> dict[str, Any]:
    """Score a bound model on an evaluation manifest (``eval_test.jsonl`` / ``eval_heldout.jsonl``).

    Returns ``{"retrieval": {"q->g": ...}, "zero_shot": {"<dataset>/audio", "<image_dataset>/image"},
    "prompt_ensemble": {...}, "confusion": {"audio": 10x10 list}}``. Zero-shot classes are the ten digit words
    (``prompt.format(word)``); ``prompt_ensemble`` averages the text embeddings of every caption template.
    Retrieval matches by label; ``trained_pairs`` (sets of two modalities) decide each pair's ``emergent`` flag.
    """
    from ..eval import embed_manifest, retrieval_metrics, zero_shot_metrics

    emb, keys = embed_manifest(model, manifest, batch_size=batch_size, match_key="label")
    out: dict[str, Any] = {"retrieval": retrieval_metrics(emb, keys, trained_pairs), "zero_shot": {},
                           "prompt_ensemble": {}, "confusion": {}}
    single = model.embed({"text": [prompt.format(w) for w in DIGIT_WORDS]}, batch_size=batch_size)["text"]
    every = [p for d in range(10) for p in class_prompts(d)]
    ens = model.embed({"text": every}, batch_size=batch_size)["text"].view(10, len(CAPTION_TEMPLATES), -1).mean(1)
    ens = torch.nn.functional.normalize(ens, dim=-1)
    names = {"audio": f"{dataset}/audio", "image": f"{image_dataset}/image"}
    for m, name in names.items():
        if m not in emb:
            continue
        out["zero_shot"][name] = zero_shot_metrics(emb[m], single, keys[m], list(DIGIT_WORDS))
        out["prompt_ensemble"][name] = zero_shot_metrics(emb[m], ens, keys[m], list(DIGIT_WORDS))
        target = torch.tensor([DIGIT_WORDS.index(k) for k in keys[m]])
        out["confusion"][m] = confusion_matrix((emb[m] @ single.T).argmax(1), target).tolist()
        out.setdefault("unseen_prompts", {})[name] = unseen_prompt_metrics(model, emb[m], keys[m], batch_size)
    return out


def prepare_data(data: Path, *, fsdd: str | Path | None = None, mnist: str | Path | None = None,
                 heldout_speakers: Sequence[str] | None = None, **params) -> str:
    """Make ``data`` a digits folder prepared as asked; returns ``"prepared"``, ``"re-prepared"`` or ``"reused"``.

    Only what is asked for is checked (``heldout_speakers``, other :class:`~anybind.data.digits.DigitsParams` fields,
    the ``fsdd`` / ``mnist`` folders): a folder prepared otherwise is prepared again, keeping its other recorded
    parameters (a subset stays that subset). A folder that matches is reused, and the log says how it was prepared.
    """
    from ..data.digits import DigitsParams, read_preparation

    wanted = dict(params)
    if heldout_speakers is not None:
        wanted["heldout_speakers"] = tuple(heldout_speakers)
    paths = {k: v for k, v in (("fsdd", fsdd), ("mnist", mnist)) if v is not None}
    found = read_preparation(data)
    shared = default_data_dir()
    if found is None:
        prepare_digits(paths.get("fsdd", shared / "fsdd" / "recordings"), paths.get("mnist", shared / "mnist"), data,
                       **wanted)
        return "prepared"
    diff = preparation_differences(data, **wanted, **paths)
    if not diff:
        log.info("using %s as prepared: held-out speakers %s, %s", data, found.get("heldout_speakers"),
                 ", ".join(f"{k}={found.get(k)}" for k in ("speakers", "max_take", "images_per_class", "seed")))
        return "reused"
    log.warning("%s was prepared with other parameters (%s); preparing it again", data, describe_differences(diff))
    kept = {k: found[k] for k in DigitsParams.__dataclass_fields__ if k in found}
    for k in ("heldout_speakers", "speakers"):
        if isinstance(kept.get(k), list):
            kept[k] = tuple(kept[k])
    prepare_digits(paths.get("fsdd", found.get("fsdd") or shared / "fsdd" / "recordings"),
                   paths.get("mnist", found.get("mnist") or shared / "mnist"), data, **{**kept, **wanted})
    return "re-prepared"


def run_digits(data_dir: str | Path, out_dir: str | Path, *, fsdd: str | Path | None = None,
               mnist: str | Path | None = None, anchor_overrides: Sequence[str] = (),
               bind_overrides: Sequence[str] = (), prompt: str = PROMPT, text_tower: str = "scratch",
               minilm: str | Path | None = None, heldout_speakers: Sequence[str] | None = None,
               prepare: dict[str, Any] | None = None, anchor_checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Prepare (when needed), train both stages, evaluate; returns the metrics written to ``OUT/metrics.json``.

    ``anchor_checkpoint`` (a checkpoint of the anchor stage, e.g. ``OUT/anchor/checkpoints/last``) skips the anchor
    stage: it does not depend on the held-out speakers, so runs that differ only in the audio side can share one.
    ``heldout_speakers`` and ``prepare`` (other :class:`~anybind.data.digits.DigitsParams` fields) say how the data
    must be prepared (:func:`prepare_data`): a folder prepared otherwise is prepared again, never silently reused. ``text_tower="minilm"`` uses the frozen pretrained MiniLM folder
    ``minilm`` (default ``../shared/models/all-MiniLM-L6-v2``) as the text side (experiments
    ``digits_minilm_anchor`` / ``digits_minilm``).
    """
    from ..checkpoint import load
    from ..eval import plot_retrieval_heatmap, write_metrics

    data, out = Path(data_dir).resolve(), Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("digits")

    with clock("prepare"):
        prepare_data(data, fsdd=fsdd, mnist=mnist, heldout_speakers=heldout_speakers, **(prepare or {}))

    if text_tower not in TEXT_TOWERS:
        raise ValueError(f"text_tower must be one of {', '.join(TEXT_TOWERS)}, got {text_tower!r}")
    anchor_exp, bind_exp = TEXT_TOWERS[text_tower]
    text_kw = []
    if text_tower == "minilm":  # an absolute folder: the checkpoints then load from any directory
        folder = Path(minilm or default_data_dir().parent / "models" / "all-MiniLM-L6-v2").resolve()
        text_kw = [f"modality.text.kwargs.path={folder}"]

    if anchor_checkpoint is None:
        with clock("anchor"):
            anchor = run_stage(anchor_exp, out / "anchor", [f"data.manifest={data / 'image_text.jsonl'}",
                                                            f"eval.prompt='{prompt}'", *text_kw, *anchor_overrides])
        anchor_checkpoint, anchor_dir = anchor.checkpoint_path, str(anchor.run_dir)
    else:
        anchor_checkpoint = Path(anchor_checkpoint).resolve()
        anchor_dir = str(anchor_checkpoint)

    with clock("bind"):
        bind = run_stage(bind_exp, out / "bind",
                         [f"init_from={anchor_checkpoint}", f"data.manifest={data / 'audio_image.jsonl'}",
                          f"eval.manifest={data / 'eval_test.jsonl'}", f"eval.prompt='{prompt}'", *text_kw,
                          *bind_overrides])

    with clock("evaluate"):
        model = load(bind.checkpoint_path)
        pairs = {frozenset(p) for p in model.checkpoint_meta.get("trained_pairs", [])}
        test = evaluate_digits(model, data / "eval_test.jsonl", trained_pairs=pairs, prompt=prompt)
        metrics: dict[str, Any] = {"retrieval": test["retrieval"], "zero_shot": test["zero_shot"],
                                   "prompt_ensemble": test["prompt_ensemble"], "confusion": test["confusion"],
                                   "prompt": prompt, "trained_pairs": sorted(sorted(p) for p in pairs),
                                   "unseen_prompts": test["unseen_prompts"], "text_tower": text_tower}
        confusions = {f"FSDD test takes: top-1 {test['zero_shot']['fsdd/audio']['top1']:.3f}":
                      torch.tensor(test["confusion"]["audio"])}
        heldout_path = data / "eval_heldout.jsonl"
        if heldout_path.is_file() and heldout_path.stat().st_size:
            held = evaluate_digits(model, heldout_path, trained_pairs=pairs, prompt=prompt, dataset="fsdd_heldout")
            metrics["zero_shot"]["fsdd_heldout/audio"] = held["zero_shot"]["fsdd_heldout/audio"]
            metrics["prompt_ensemble"]["fsdd_heldout/audio"] = held["prompt_ensemble"]["fsdd_heldout/audio"]
            metrics["heldout"] = {"retrieval": {k: v for k, v in held["retrieval"].items() if "audio" in k},
                                  "confusion": held["confusion"]["audio"]}
            speakers = json.loads((data / "digits.json").read_text())["params"]["heldout_speakers"]
            confusions[f"held-out speaker {', '.join(speakers)}: top-1 "
                       f"{held['zero_shot']['fsdd_heldout/audio']['top1']:.3f}"] = torch.tensor(held["confusion"]["audio"])
        plot_confusion(confusions, out / "confusion_audio.png")
        plot_retrieval_heatmap(metrics, out / "retrieval_R@1.png")
    metrics["timing"] = clock.report()
    metrics["runs"] = {"anchor": anchor_dir, "bind": str(bind.run_dir)}
    write_metrics(out, metrics)
    return metrics


def _summary(m: dict) -> str:
    zs, r = m["zero_shot"], m["retrieval"]
    lines = [f"zero-shot audio->text top-1 (emergent), FSDD test takes: {zs['fsdd/audio']['top1']:.3f} "
             f"(n={zs['fsdd/audio']['n']})"]
    if "fsdd_heldout/audio" in zs:
        lines.append(f"zero-shot audio->text top-1 (emergent), held-out speakers: {zs['fsdd_heldout/audio']['top1']:.3f} "
                     f"(n={zs['fsdd_heldout/audio']['n']})")
    lines.append(f"audio->image R@1 by class: {r['audio->image']['R@1']:.3f}; audio->text R@1: {r['audio->text']['R@1']:.3f}"
                 f" (emergent: {r['audio->text']['emergent']})")
    lines.append(f"zero-shot image->text top-1, MNIST test: {zs['mnist/image']['top1']:.3f} (n={zs['mnist/image']['n']})")
    u = m.get("unseen_prompts", {}).get("fsdd/audio")
    if u:
        lines.append(f"zero-shot audio->text top-1 on {u['n_templates']} unseen phrasings: mean {u['mean_top1']:.3f}, "
                     f"min {u['min_top1']:.3f}, ensemble {u['ensemble_top1']:.3f}")
    t = m["timing"]["total"]
    lines.append(f"total {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU (user+sys), load average {t['load_avg']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m anybind.train.digits``: prepare -> anchor -> bind -> evaluate (see the module docstring)."""
    shared = default_data_dir()
    from ..console import ArgumentParser  # one-line errors, --debug

    ap = ArgumentParser(prog="python -m anybind.train.digits", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/digits", help="prepared digits folder (prepared here when missing)")
    ap.add_argument("--out", default="runs/digits", help="output folder")
    ap.add_argument("--fsdd", default=None, help=f"FSDD recordings (default {shared / 'fsdd' / 'recordings'})")
    ap.add_argument("--mnist", default=None, help=f"MNIST idx folder (default {shared / 'mnist'})")
    ap.add_argument("--prompt", default=PROMPT, help="zero-shot prompt, formatted with the digit word")
    ap.add_argument("--text-tower", default="scratch", choices=sorted(TEXT_TOWERS),
                    help="scratch: train a text tower; minilm: the frozen pretrained all-MiniLM-L6-v2 (hf_text)")
    ap.add_argument("--minilm", default=None, help="the MiniLM folder (default ../shared/models/all-MiniLM-L6-v2)")
    ap.add_argument("--heldout-speakers", nargs="*", default=None, metavar="SPEAKER",
                    help="FSDD speakers never trained on, evaluated apart (default: george; none: no held-out split). "
                         "A data folder prepared with other speakers is prepared again")
    ap.add_argument("--anchor", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the anchor stage")
    ap.add_argument("--bind", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the bind stage")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    m = run_digits(a.data, a.out, fsdd=a.fsdd, mnist=a.mnist, anchor_overrides=a.anchor, bind_overrides=a.bind,
                   prompt=a.prompt, text_tower=a.text_tower, minilm=a.minilm, heldout_speakers=a.heldout_speakers)
    print(_summary(m))
    print(f"metrics: {Path(a.out) / 'metrics.json'}; figures: {Path(a.out) / 'confusion_audio.png'}, "
          f"{Path(a.out) / 'retrieval_R@1.png'}")


if __name__ == "__main__":
    from ..console import run_command

    run_command("python -m anybind.train.digits", main)
