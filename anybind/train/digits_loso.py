"""Leave-one-speaker-out over the spoken-digits recipe: each FSDD speaker held out in turn, never heard in training.

``python -m anybind.train.digits_loso --data data/digits_loso --out runs/digits_loso`` trains the anchor stage once
(MNIST images and captions: it does not depend on the speakers), then, for every speaker, prepares
``DATA/heldout-<speaker>`` (:func:`anybind.data.digits.prepare_digits` with that speaker held out), trains the bind
stage from the shared anchor and evaluates it (:func:`anybind.train.digits.run_digits`). The held-out speaker's
500 recordings measure emergent zero-shot audio->text classification on a voice the audio tower never heard.

``OUT/loso.json`` holds every speaker's figures and the means; ``OUT/<speaker>/`` is that speaker's recipe output
(``metrics.json``, confusion matrices). ``--bind KEY=VALUE`` overrides the bind stage of every run (the
augmentations of ``experiment=digits`` are the default; ``--bind modality.audio.augment={}`` trains without them).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Sequence

from ..data.digits import default_data_dir
from .digits import PROMPT, run_digits
from .pipeline import StageClock

log = logging.getLogger("anybind.digits")

_FSDD_NAME = re.compile(r"^\d_([A-Za-z]+)_\d+\.wav$")


def fsdd_speakers(fsdd: str | Path) -> list[str]:
    """The speakers of an FSDD recordings folder (file names ``{digit}_{speaker}_{take}.wav``), sorted."""
    folder = Path(fsdd)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no FSDD recordings folder here")
    found = sorted({m.group(1) for p in folder.iterdir() if (m := _FSDD_NAME.match(p.name))})
    if not found:
        raise ValueError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) in this folder")
    return found


def run_loso(data_dir: str | Path, out_dir: str | Path, *, speakers: Sequence[str] | None = None,
             fsdd: str | Path | None = None, mnist: str | Path | None = None, anchor_overrides: Sequence[str] = (),
             bind_overrides: Sequence[str] = (), prompt: str = PROMPT,
             anchor_checkpoint: str | Path | None = None, prepare: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hold out each of ``speakers`` (default: every FSDD speaker) in turn; returns what ``OUT/loso.json`` holds.

    ``prepare`` passes other :class:`~anybind.data.digits.DigitsParams` fields to every preparation (a subset of
    speakers, fewer takes); ``anchor_checkpoint`` reuses an anchor stage instead of training one."""
    data, out = Path(data_dir), Path(out_dir)
    fsdd = Path(fsdd) if fsdd else default_data_dir() / "fsdd" / "recordings"
    speakers = list(speakers or fsdd_speakers(fsdd))
    clock = StageClock("digits_loso")
    rows: dict[str, dict[str, Any]] = {}
    for s in speakers:
        with clock(s):
            m = run_digits(data / f"heldout-{s}", out / s, fsdd=fsdd, mnist=mnist, anchor_overrides=anchor_overrides,
                           bind_overrides=bind_overrides, prompt=prompt, heldout_speakers=[s],
                           anchor_checkpoint=anchor_checkpoint, prepare=prepare)
        if anchor_checkpoint is None:  # the first run trained it; the others share it
            anchor_checkpoint = Path(m["runs"]["anchor"]) / "checkpoints" / "last"
        held, test = m["zero_shot"]["fsdd_heldout/audio"], m["zero_shot"]["fsdd/audio"]
        rows[s] = {"heldout_top1": held["top1"], "heldout_top5": held.get("top5"), "heldout_n": held["n"],
                   "test_top1": test["top1"], "test_n": test["n"],
                   "heldout_ensemble_top1": m["prompt_ensemble"]["fsdd_heldout/audio"]["top1"]}
        log.info("held out %s: zero-shot audio->text top-1 %.3f (test takes %.3f)", s, held["top1"], test["top1"])
    mean = {k: sum(r[k] for r in rows.values()) / len(rows) for k in ("heldout_top1", "test_top1")}
    result = {"speakers": rows, "mean": mean, "prompt": prompt, "bind_overrides": list(bind_overrides),
              "anchor": str(anchor_checkpoint), "timing": clock.report()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "loso.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_loso` result, one row per held-out speaker and the mean."""
    lines = ["| held-out speaker | zero-shot audio->text top-1 (n) | top-5 | test takes top-1 |", "|---|---|---|---|"]
    for s, r in result["speakers"].items():
        top5 = "-" if r["heldout_top5"] is None else f"{r['heldout_top5']:.3f}"
        lines.append(f"| {s} | {r['heldout_top1']:.3f} ({r['heldout_n']}) | {top5} | {r['test_top1']:.3f} |")
    m = result["mean"]
    lines.append(f"| **mean** | **{m['heldout_top1']:.3f}** | | {m['test_top1']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m anybind.train.digits_loso`` (see the module docstring)."""
    from ..console import ArgumentParser  # one-line errors, --debug

    ap = ArgumentParser(prog="python -m anybind.train.digits_loso", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/digits_loso", help="folder of the per-speaker prepared data")
    ap.add_argument("--out", default="runs/digits_loso", help="output folder")
    ap.add_argument("--speakers", nargs="*", default=None, help="hold out these speakers (default: all of FSDD)")
    ap.add_argument("--fsdd", default=None, help="FSDD recordings (default ../shared/data/fsdd/recordings)")
    ap.add_argument("--mnist", default=None, help="MNIST idx folder (default ../shared/data/mnist)")
    ap.add_argument("--prompt", default=PROMPT, help="zero-shot prompt, formatted with the digit word")
    ap.add_argument("--anchor-checkpoint", default=None, help="reuse this anchor-stage checkpoint (no anchor training)")
    ap.add_argument("--anchor", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the anchor stage")
    ap.add_argument("--bind", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every bind stage")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    r = run_loso(a.data, a.out, speakers=a.speakers, fsdd=a.fsdd, mnist=a.mnist, anchor_overrides=a.anchor,
                 bind_overrides=a.bind, prompt=a.prompt, anchor_checkpoint=a.anchor_checkpoint)
    print(table(r))
    print(f"results: {Path(a.out) / 'loso.json'}")


if __name__ == "__main__":
    from ..console import run_command

    run_command("python -m anybind.train.digits_loso", main)
