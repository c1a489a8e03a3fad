"""Spoken digits (FSDD), handwritten digits (MNIST) and digit words, paired by class into anybind manifests.

``anybind-prepare-digits --fsdd FSDD/recordings --mnist MNIST_DIR --out data/digits`` reads the recordings and the
idx files in place, writes every MNIST image as a 28x28 PNG under ``OUT/mnist/`` and these manifests
(ARCHITECTURE contract 4; labels are the digit words, ``"seven"``):

=====================  ================================================================================
``image_text.jsonl``   stage 1 (anchor): each MNIST image with a caption from :data:`CAPTION_TEMPLATES`
                       (``captions_per_image`` rows per training image, one per test image)
``audio_image.jsonl``  stage 2 (bind): each recording with ``images_per_recording`` random MNIST images of
                       its digit (training images for training recordings, test images otherwise); no text
``eval_test.jsonl``    evaluation, one modality per row: the test takes, the MNIST test images, one caption
                       per digit and template
``eval_heldout.jsonl`` the same with every recording of the held-out speakers instead of the test takes
``digits.json``        the options, the counts and the manifests' names
=====================  ================================================================================

Splits. FSDD file names are ``{digit}_{speaker}_{take}.wav``; takes 0-4 of every speaker are the test set (the
dataset's convention) and the others train, except that every take of a held-out speaker (``heldout_speakers``)
goes to split ``heldout`` and is never trained on. MNIST (only its 10000-image test set is needed) is split by a
seeded per-class permutation into ``train`` and ``test``.

Training sees image-text pairs and audio-image pairs only: audio and text never share a row, so audio->text
retrieval and zero-shot audio classification through text prompts are emergent.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .digit_sources import FSDD_NAME, IDX_MAGIC, Recording, list_fsdd, load_mnist, read_idx  # noqa: F401
from .manifest import write_manifest

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word}: "seven", {numeral}: "7". Training captions and zero-shot prompts both come from here.
CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {numeral}",
    "the number {word}",
    "a handwritten digit {numeral}",
    "the written number {word}",
    "a drawing of the digit {word}",
    "{word}",
    "{numeral}",
)
FSDD_TEST_TAKES = 5  # takes 0-4 of every speaker: the FSDD test set
DEFAULT_HELDOUT = ("george",)  # the first speaker in alphabetical order


def caption(template: str, digit: int) -> str:
    """``caption("a handwritten {word}", 7) == "a handwritten seven"``; ``{numeral}`` gives ``"7"``."""
    return template.format(word=DIGIT_WORDS[digit], numeral=str(digit))


def class_prompts(digit: int, templates: Sequence[str] = CAPTION_TEMPLATES) -> list[str]:
    """Every caption of ``digit``: the prompt ensemble of zero-shot classification."""
    return [caption(t, digit) for t in templates]


# ------------------------------------------------------------------------------------------------ splits
def fsdd_split(rec: Recording, heldout_speakers: Sequence[str] = DEFAULT_HELDOUT) -> str:
    """``heldout`` for a held-out speaker, else ``test`` for takes 0-4, else ``train``."""
    if rec.speaker in heldout_speakers:
        return "heldout"
    return "test" if rec.take < FSDD_TEST_TAKES else "train"


def mnist_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A ``"train"`` / ``"test"`` string per image: per digit, a seeded ``test_fraction`` of its images is test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for d in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == d))
        split[idx[: max(1, round(len(idx) * test_fraction))]] = "test"
    return split


# ------------------------------------------------------------------------------------------------ writing
@dataclass
class DigitsParams:
    heldout_speakers: tuple[str, ...] = DEFAULT_HELDOUT
    mnist_test_fraction: float = 0.2
    captions_per_image: int = 2
    images_per_recording: int = 8
    seed: int = 0
    images_per_class: int | None = None  # keep at most this many MNIST images per digit (small test subsets)
    max_take: int | None = None  # keep FSDD takes 0 .. max_take - 1 only (small test subsets)
    speakers: tuple[str, ...] | None = None  # keep these FSDD speakers only


@dataclass
class DigitsData:
    root: Path
    manifests: dict[str, Path]
    counts: dict[str, dict[str, int]]
    params: DigitsParams = field(default_factory=DigitsParams)


MANIFESTS = ("image_text", "audio_image", "eval_test", "eval_heldout")


def _write_pngs(images: np.ndarray, keep: np.ndarray, folder: Path) -> dict[int, str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i in keep.tolist():
        name = f"mnist/{i:05d}.png"
        path = folder / f"{i:05d}.png"
        if not path.is_file():  # the same index is the same image: re-runs only write what is missing
            tmp = path.with_suffix(".tmp")
            Image.fromarray(images[i], mode="L").save(tmp, format="PNG")
            tmp.replace(path)
        names[i] = name
    return names


def prepare_digits(fsdd_dir: str | Path, mnist_dir: str | Path, out_dir: str | Path, **params) -> DigitsData:
    """Write the MNIST PNGs and the four manifests (see the module docstring) under ``out_dir``.

    ``params`` are :class:`DigitsParams` fields. Recordings stay where they are (manifests hold absolute paths).
    """
    p = DigitsParams(**params)
    p.heldout_speakers = tuple(p.heldout_speakers)
    if p.captions_per_image < 1 or p.images_per_recording < 1:
        raise ValueError("captions_per_image and images_per_recording must be >= 1")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(p.seed)

    # MNIST: split, optional per-class subset, PNGs
    images, labels = load_mnist(mnist_dir)
    msplit = mnist_split(labels, p.mnist_test_fraction, p.seed)
    keep = np.arange(len(labels))
    if p.images_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == d)[: p.images_per_class] for d in range(10)])
        keep.sort()
        msplit = mnist_split(labels[keep], p.mnist_test_fraction, p.seed)
        msplit = dict(zip(keep.tolist(), msplit))
    else:
        msplit = dict(enumerate(msplit))
    png = _write_pngs(images, keep, out / "mnist")
    by_class = {(s, d): [i for i in keep.tolist() if msplit[i] == s and labels[i] == d]
                for s in ("train", "test") for d in range(10)}
    missing = [f"{s}/{DIGIT_WORDS[d]}" for (s, d), v in by_class.items() if not v]
    if missing:
        raise ValueError(f"MNIST subset leaves no image for {missing}; raise images_per_class")

    # FSDD: recordings and their splits
    recs = list_fsdd(fsdd_dir)
    if p.speakers is not None:
        recs = [r for r in recs if r.speaker in p.speakers]
    if p.max_take is not None:
        recs = [r for r in recs if r.take < p.max_take]
    speakers = sorted({r.speaker for r in recs})
    unknown = [s for s in p.heldout_speakers if s not in speakers]
    if unknown:
        raise ValueError(f"held-out speakers {unknown} are not among the FSDD speakers {speakers}")

    # image-text (anchor stage)
    templates = len(CAPTION_TEMPLATES)
    image_text = []
    for i in keep.tolist():
        d, s = int(labels[i]), msplit[i]
        n = p.captions_per_image if s == "train" else 1
        for k, t in enumerate(rng.choice(templates, size=min(n, templates), replace=False).tolist()):
            image_text.append({"id": f"mnist{i:05d}-c{k}", "image": png[i], "text": caption(CAPTION_TEMPLATES[t], d),
                               "label": DIGIT_WORDS[d], "split": s})

    # audio-image (bind stage): training recordings meet training images, the rest meet test images
    audio_image, splits = [], {}
    for r in recs:
        s = splits[r.id] = fsdd_split(r, p.heldout_speakers)
        pool = by_class[("train" if s == "train" else "test", r.digit)]
        n = min(p.images_per_recording if s == "train" else 1, len(pool))
        for k, i in enumerate(rng.choice(pool, size=n, replace=False).tolist()):
            audio_image.append({"id": f"{r.id}-i{k}", "audio": str(r.path), "image": png[i],
                                "label": DIGIT_WORDS[r.digit], "split": s, "speaker": r.speaker, "take": r.take})

    # evaluation: one modality per row
    def eval_rows(audio_split: str) -> list[dict]:
        rows = [{"id": r.id, "audio": str(r.path), "label": DIGIT_WORDS[r.digit], "split": audio_split,
                 "speaker": r.speaker, "take": r.take} for r in recs if splits[r.id] == audio_split]
        rows += [{"id": f"mnist{i:05d}", "image": png[i], "label": DIGIT_WORDS[int(labels[i])], "split": audio_split}
                 for i in keep.tolist() if msplit[i] == "test"]
        rows += [{"id": f"text-{d}-{t}", "text": caption(tpl, d), "label": DIGIT_WORDS[d], "split": audio_split}
                 for d in range(10) for t, tpl in enumerate(CAPTION_TEMPLATES)]
        return rows

    manifests = {
        "image_text": write_manifest(out / "image_text.jsonl", image_text),
        "audio_image": write_manifest(out / "audio_image.jsonl", audio_image),
        "eval_test": write_manifest(out / "eval_test.jsonl", eval_rows("test")),
        "eval_heldout": write_manifest(out / "eval_heldout.jsonl", eval_rows("heldout") if p.heldout_speakers else []),
    }
    count = lambda rows, key: {s: sum(1 for r in rows if r["split"] == s and key in r)  # noqa: E731
                               for s in sorted({r["split"] for r in rows})}
    counts = {
        "mnist_images": {s: sum(1 for i in keep.tolist() if msplit[i] == s) for s in ("train", "test")},
        "recordings": {s: sum(1 for v in splits.values() if v == s) for s in ("train", "test", "heldout")},
        "image_text_rows": count(image_text, "text"),
        "audio_image_rows": count(audio_image, "audio"),
    }
    info = {"params": {**asdict(p), "fsdd": str(Path(fsdd_dir).resolve()), "mnist": str(Path(mnist_dir).resolve())},
            "speakers": speakers, "counts": counts, "manifests": {k: v.name for k, v in manifests.items()},
            "templates": list(CAPTION_TEMPLATES), "labels": list(DIGIT_WORDS)}
    (out / "digits.json").write_text(json.dumps(info, indent=2) + "\n")
    return DigitsData(out, manifests, counts, p)


def _as_json(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as read back from digits.json


def read_preparation(out_dir: str | Path) -> dict | None:
    """The ``params`` a digits folder was prepared with (``digits.json``), or ``None`` if it never was."""
    try:
        params = json.loads((Path(out_dir) / "digits.json").read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return params if isinstance(params, dict) else None


def preparation_differences(out_dir: str | Path, **wanted) -> dict | None:
    """How the digits folder ``out_dir`` was prepared differently from ``wanted`` (:class:`DigitsParams` fields, and
    ``fsdd`` / ``mnist`` folders): ``{name: (found, wanted)}``, ``{}`` when every one matches, ``None`` when the
    folder was never prepared. Parameters not in ``wanted`` are not compared."""
    found = read_preparation(out_dir)
    if found is None:
        return None
    fields = set(DigitsParams.__dataclass_fields__) | {"fsdd", "mnist"}
    unknown = sorted(set(wanted) - fields)
    if unknown:
        raise ValueError(f"unknown digits preparation parameters {unknown} (known: {sorted(fields)})")
    diff = {}
    for key, value in wanted.items():
        value = str(Path(value).resolve()) if key in ("fsdd", "mnist") else _as_json(value)
        if found.get(key) != value:
            diff[key] = (found.get(key), value)
    return diff


def describe_differences(diff: dict) -> str:
    return ", ".join(f"{k} {found!r} -> {wanted!r}" for k, (found, wanted) in diff.items())


# --------------------------------------------------------------------------------------------------- CLI
def default_data_dir() -> Path:
    """``../shared/data`` next to the repository (where the project's tests find FSDD and MNIST)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> None:
    """``anybind-prepare-digits``: write the digits manifests (see :mod:`anybind.data.digits`)."""
    d, shared = DigitsParams(), default_data_dir()
    from ..console import ArgumentParser  # one-line errors, --debug

    ap = ArgumentParser(prog="anybind-prepare-digits",
                                 description="FSDD + MNIST -> image-text and audio-image manifests paired by digit")
    ap.add_argument("--fsdd", default=str(shared / "fsdd" / "recordings"), help="FSDD recordings folder")
    ap.add_argument("--mnist", default=str(shared / "mnist"), help="folder with t10k-images/labels idx(.gz) files")
    ap.add_argument("--out", default="data/digits", help="output folder (PNGs + manifests)")
    ap.add_argument("--heldout-speakers", nargs="*", default=list(d.heldout_speakers), metavar="SPEAKER",
                    help="speakers kept out of training (none: no held-out split)")
    ap.add_argument("--mnist-test-fraction", type=float, default=d.mnist_test_fraction)
    ap.add_argument("--captions-per-image", type=int, default=d.captions_per_image)
    ap.add_argument("--images-per-recording", type=int, default=d.images_per_recording)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--images-per-class", type=int, default=None, help="small subset: MNIST images per digit")
    ap.add_argument("--max-take", type=int, default=None, help="small subset: FSDD takes 0..N-1 only")
    ap.add_argument("--speakers", nargs="*", default=None, help="small subset: these FSDD speakers only")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    params = dict(heldout_speakers=tuple(a.heldout_speakers), mnist_test_fraction=a.mnist_test_fraction,
                  captions_per_image=a.captions_per_image, images_per_recording=a.images_per_recording, seed=a.seed,
                  images_per_class=a.images_per_class, max_take=a.max_take,
                  speakers=tuple(a.speakers) if a.speakers else None)
    diff = preparation_differences(a.out, fsdd=a.fsdd, mnist=a.mnist, **params)
    if diff:  # every manifest is written again: nothing of the other preparation is reused
        print(f"{a.out} was prepared with other parameters ({describe_differences(diff)}); preparing it again",
              file=sys.stderr)
    info = prepare_digits(a.fsdd, a.mnist, a.out, **params)
    print(f"digits data in {info.root} ({time.perf_counter() - t0:.1f} s)")
    print(json.dumps({"counts": info.counts, "manifests": {k: str(v) for k, v in info.manifests.items()}}, indent=2))


if __name__ == "__main__":
    from ..console import run_command

    run_command("anybind-prepare-digits", main)
