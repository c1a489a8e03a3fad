"""FSDD through the class-folder adapter gives the digits recipe's own zero-shot top-1 on the same checkpoint.

The recipe scores ``eval_test.jsonl`` (:func:`anybind.train.digits.evaluate_digits`, prompt ``"the number {}"``);
the same recordings laid out as ``<word>/<file>.wav`` class folders and scored by ``benchmark=folder`` with that one
template must give the same top-1 over the same items. Skipped without ``../shared/data``.
"""

import json
from pathlib import Path

import pytest
import torch

import anybind
from anybind.data.digits import DIGIT_WORDS, prepare_digits
from anybind.eval.benchmarks import load_benchmark
from anybind.eval.run import run_benchmark
from anybind.train.digits import PROMPT, evaluate_digits

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FSDD, MNIST = SHARED / "fsdd" / "recordings", SHARED / "mnist"


def class_folders(manifest: Path, out: Path) -> Path:
    """The audio rows of a digits evaluation manifest as ``out/<label>/<file>`` symlinks."""
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if "audio" in row:
            link = out / row["label"] / Path(row["audio"]).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(row["audio"]) if Path(row["audio"]).is_absolute() else manifest.parent / row["audio"])
    return out


@pytest.mark.shared_data
def test_class_folder_zero_shot_equals_the_digits_recipe(tmp_path):
    if not (FSDD.is_dir() and MNIST.is_dir()):
        pytest.skip("../shared/data (FSDD, MNIST) missing")
    from anybind.train.recipe import build_model, compose_train_config

    data = tmp_path / "data"
    prepare_digits(FSDD, MNIST, data, speakers=("george", "jackson"), heldout_speakers=("george",), max_take=5,
                   images_per_class=2, images_per_recording=1)
    cfg = compose_train_config(["experiment=digits", "init_from=x", "model_size=test", "data.manifest=x.jsonl"])
    torch.manual_seed(1)
    path = anybind.save_model(tmp_path / "ck" / "model", build_model(cfg), config={"experiment": "digits"})
    model = anybind.load(path)

    recipe = evaluate_digits(model, data / "eval_test.jsonl")["zero_shot"]["fsdd/audio"]
    folder = load_benchmark("folder", class_folders(data / "eval_test.jsonl", tmp_path / "fsdd_classes"),
                            modality="audio", templates=[PROMPT])
    assert sorted(folder.classnames) == sorted(DIGIT_WORDS) and len(folder.items) == recipe["n"] == 50
    result = run_benchmark(model, folder, checkpoint=path, batch_size=256)
    ours = result["zero_shot"]["folder/audio"]
    assert ours["n"] == recipe["n"] and ours["top1"] == pytest.approx(recipe["top1"], abs=1e-9)
    assert ours["top5"] == pytest.approx(recipe["top5"], abs=1e-9)
