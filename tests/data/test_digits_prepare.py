"""The digits recipe and its data folder: held-out speakers chosen in the recipe, a folder prepared with other
parameters prepared again (never silently reused), and the docs' numbers agreeing with the code."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from anybind.data.digits import CAPTION_TEMPLATES, main as prepare_main, prepare_digits, preparation_differences
from anybind.train.digits import prepare_data

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
FSDD, MNIST = SHARED / "fsdd" / "recordings", SHARED / "mnist"
needs_data = pytest.mark.skipif(not (FSDD.is_dir() and MNIST.is_dir()), reason="../shared/data (FSDD, MNIST) missing")
SUBSET = dict(speakers=("george", "jackson"), max_take=2, images_per_class=2)


def speakers_of(path: Path) -> set:
    return {json.loads(line)["speaker"] for line in path.read_text().splitlines() if '"audio"' in line}


def test_docs_template_count_matches_the_code():
    text = (REPO / "docs" / "digits.md").read_text()
    counts = {int(n) for n in re.findall(r"(\d+) templates", text)}
    assert counts == {len(CAPTION_TEMPLATES)}, counts


@needs_data
def test_recipe_prepares_again_when_asked_for_other_held_out_speakers(tmp_path):
    data = tmp_path / "digits"
    prepare_digits(FSDD, MNIST, data, heldout_speakers=("george",), **SUBSET)
    assert speakers_of(data / "eval_heldout.jsonl") == {"george"}
    assert prepare_data(data) == "reused"  # nothing asked for: the folder is used as prepared (and logged)
    assert prepare_data(data, heldout_speakers=["george"]) == "reused"

    assert prepare_data(data, heldout_speakers=["jackson"]) == "re-prepared"
    info = json.loads((data / "digits.json").read_text())
    assert info["params"]["heldout_speakers"] == ["jackson"]
    assert info["params"]["speakers"] == ["george", "jackson"] and info["params"]["max_take"] == 2  # subset kept
    assert speakers_of(data / "eval_heldout.jsonl") == {"jackson"}
    rows = [json.loads(r) for r in (data / "audio_image.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows if r["speaker"] == "jackson"} == {"heldout"}  # never trained on now
    assert {r["split"] for r in rows if r["speaker"] == "george"} == {"test"}  # takes 0-1: the test takes
    assert preparation_differences(data, heldout_speakers=("jackson",)) == {}
    assert preparation_differences(data, heldout_speakers=("george",)) == {"heldout_speakers": (["jackson"], ["george"])}
    assert preparation_differences(tmp_path / "never") is None


@needs_data
def test_prepare_cli_says_when_it_replaces_another_preparation(tmp_path, capsys):
    out = tmp_path / "d"
    base = ["--fsdd", str(FSDD), "--mnist", str(MNIST), "--out", str(out), "--speakers", "george", "jackson",
            "--max-take", "2", "--images-per-class", "2"]
    prepare_main(base + ["--heldout-speakers", "george"])
    assert "other parameters" not in capsys.readouterr().err
    prepare_main(base + ["--heldout-speakers", "jackson"])
    err = capsys.readouterr().err
    assert "was prepared with other parameters (heldout_speakers ['george'] -> ['jackson'])" in err
    assert json.loads((out / "digits.json").read_text())["params"]["heldout_speakers"] == ["jackson"]


@needs_data
def test_recipe_cli_takes_held_out_speakers_and_reports_a_bad_one_in_one_line(tmp_path):
    data = tmp_path / "digits"
    prepare_digits(FSDD, MNIST, data, heldout_speakers=("george",), **SUBSET)
    code = "from anybind.cli import run_command; from anybind.train.digits import main; " \
           "run_command('python -m anybind.train.digits', main)"
    proc = subprocess.run([sys.executable, "-c", code, "--data", str(data), "--out", str(tmp_path / "run"),
                           "--heldout-speakers", "nobody"], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m anybind.train.digits: error: held-out speakers ['nobody']"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
