"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

STEPS = 30


def overrides(manifest):
    # 20 training samples / batch 4 = 5 batches per epoch; checkpoints every 3 steps land mid-epoch (3, 6, 9, 12).
    # Drop path on the image tower makes the result depend on the torch RNG state, which must be restored too.
    return [f"data.manifest={manifest}", "debug=smoke", "modality=[image,text,points]", f"trainer.max_steps={STEPS}",
            "trainer.ckpt_every=3", "trainer.keep_last=10", "trainer.num_threads=1", "trainer.tensorboard=false",
            "eval.enabled=false", "data.batch_size=4", "+modality.image.kwargs.drop_path=0.2", "optim.warmup_steps=5"]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    with (run_dir / "metrics.csv").open() as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    manifest = make_tiny_dataset(tmp_path / "data", n=25, modalities=("image", "text", "points"), val_every=5)
    ref = run(compose_train_config(overrides(manifest)), run_dir=tmp_path / "reference")

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "anybind.train.recipe", *overrides(manifest), f"hydra.run.dir={killed}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = killed / "checkpoints" / "last"  # a link to the newest complete step directory
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if pointer.is_symlink() and int(os.readlink(pointer).split("_")[1]) >= 6:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == -signal.SIGKILL, f"the run was not killed mid-way (rc={rc}): {proc.stderr.read().decode()[-3000:]}"
    assert not (killed / "metrics.json").exists()  # it never reached the end
    state = json.loads((pointer / "state.json").read_text())
    assert 0 < state["tree"]["step"] < STEPS and state["tree"]["batch_in_epoch"] not in (0, 5)  # mid-epoch

    resumed = run(compose_train_config(overrides(manifest) + ["resume=latest"]), run_dir=killed)

    curve_ref, curve_resumed = losses(ref.run_dir), losses(resumed.run_dir)
    assert [s for s, _ in curve_resumed] == list(range(1, STEPS + 1))
    assert [l for _, l in curve_resumed] == pytest.approx([l for _, l in curve_ref], rel=0, abs=1e-6)
    a, b = load_file(str(ref.checkpoint_path)), load_file(str(resumed.checkpoint_path))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # and the temperatures / optimizer moments of the final training state agree too
    sa = load_file(str(ref.run_dir / "checkpoints" / f"step_{STEPS:06d}" / "state.safetensors"))
    sb = load_file(str(resumed.run_dir / "checkpoints" / f"step_{STEPS:06d}" / "state.safetensors"))
    for k in sa:
        if k.startswith(("loss.", "optimizer.")):
            torch.testing.assert_close(sb[k], sa[k], rtol=0, atol=1e-6, msg=k)
