"""One training run per run directory, and resume=latest continues only the run's own checkpoints."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anybind.io import LockedError, WriterLock
from anybind.train.checkpointing import CheckpointManager, load_state
from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n=10, modalities=("image", "text"), val_every=5)


def overrides(manifest, *extra):
    return [f"data.manifest={manifest}", "debug=smoke", "modality=[image,text]", "eval.enabled=false",
            "trainer.tensorboard=false", *extra]


def test_resume_latest_never_continues_a_sibling_run(manifest, tmp_path, caplog):
    """Issue 15: in a run folder without checkpoints, resume=latest continued a sibling experiment."""
    first = run(compose_train_config(overrides(manifest, "trainer.seed=1")), run_dir=tmp_path / "runs" / "x" / "t1")
    assert CheckpointManager(first.run_dir).latest() is not None
    with caplog.at_level(logging.INFO, logger="anybind"):
        second = run(compose_train_config(overrides(manifest, "trainer.seed=2", "resume=latest")),
                     run_dir=tmp_path / "runs" / "x" / "t2")
    assert "has no checkpoint yet; starting from step 0" in caplog.text
    assert "resumed from" not in caplog.text
    with (second.run_dir / "metrics.csv").open() as f:
        assert f.readlines()[1].startswith("1,")  # it trained from step 1, not from the sibling's last step


def test_resume_from_an_explicit_run_says_which_checkpoint(manifest, tmp_path, caplog):
    first = run(compose_train_config(overrides(manifest, "trainer.max_steps=2")), run_dir=tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="anybind"):
        second = run(compose_train_config(overrides(manifest, "trainer.max_steps=4", f"resume={first.run_dir}")),
                     run_dir=tmp_path / "b")
    step_dir = first.run_dir / "checkpoints" / "step_000002"
    assert f"continuing from {step_dir}" in caplog.text
    assert load_state(CheckpointManager(second.run_dir).latest() / "state")["step"] == 4


def test_a_second_training_into_the_same_run_directory_fails_at_once(manifest, tmp_path):
    run_dir = tmp_path / "run"
    with WriterLock(run_dir, "training run directory"):  # as a first anybind-train holding it would
        with pytest.raises(LockedError, match=f"PID {os.getpid()}"):
            run(compose_train_config(overrides(manifest)), run_dir=run_dir)
        proc = subprocess.run([sys.executable, "-m", "anybind.train.recipe", *overrides(manifest),
                               f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"anybind-train: error: training run directory {run_dir} is being written by another process " \
           f"(PID {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".anybind.lock"]  # nothing written (Hydra's files neither)
    # once the first run is gone the directory is free again
    assert run(compose_train_config(overrides(manifest)), run_dir=run_dir).checkpoint_path.exists()
