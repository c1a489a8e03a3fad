"""anybind-train on SIGTERM (what schedulers send before a kill) or Ctrl-C: a checkpoint at the next step boundary,
a message with the command that resumes, and that command finishing the run."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinydata import make_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
CODE = "import sys; from anybind.cli import train_main; sys.argv[0] = 'anybind-train'; train_main()"


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_prints_the_resume_command(tmp_path, sig):
    manifest = make_tiny_dataset(tmp_path / "data", n=12, modalities=("image", "text"))
    run_dir = tmp_path / "run"
    args = ["debug=smoke", f"data.manifest={manifest}", "modality=[image,text]", "trainer.max_steps=100000",
            "trainer.ckpt_every=0", "trainer.tensorboard=false", "eval.enabled=false", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", CODE, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while len(_rows(run_dir)) < 3:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 240, "training never logged a step"
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err
    from anybind.train.checkpointing import CheckpointManager, load_state

    latest = CheckpointManager(run_dir).latest()  # the step directory checkpoints/last points to
    step = int(load_state(latest / "state")["step"])
    assert step >= 3 and (latest / "state.json").exists()
    assert f"anybind-train: {signal.Signals(sig).name}: stopped at step {step} of 100000" in err
    resume = err.strip().splitlines()[-1].strip()
    assert resume.startswith("anybind-train debug=smoke") and resume.endswith(f"resume={run_dir}")

    # the resume command (to a nearby end) continues from that step and finishes
    cmd = shlex.split(resume)[1:]
    cmd = [a for a in cmd if not a.startswith("trainer.max_steps=")] + [f"trainer.max_steps={step + 2}"]
    done = subprocess.run([sys.executable, "-c", CODE, *cmd], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(load_state(CheckpointManager(run_dir).latest() / "state")["step"]) == step + 2
    assert [int(r["step"]) for r in _rows(run_dir)][-3:] == [step, step + 1, step + 2]


def test_train_user_error_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CODE, "debug=smoke", f"data.manifest={tmp_path / 'nope.jsonl'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("anybind-train: error: ") and "nope.jsonl" in lines[-1], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
