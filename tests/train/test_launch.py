"""Launchers: torchrun DDP equals one process on the same global batch; Hydra multirun sweeps."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

COMMON = ["debug=smoke", "modality=[image,text,points]", "trainer.max_steps=4", "trainer.num_threads=1",
          "trainer.tensorboard=false", "eval.max_samples=8"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("launch"), n=20, modalities=("image", "text", "points"), val_every=5)


def curve(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    """One process, global batch 4."""
    return run(compose_train_config([f"data.manifest={manifest}", *COMMON, "data.batch_size=4"]),
               run_dir=tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_matches_one_process_and_rank0_owns_the_run_dir(strategy, manifest, reference, tmp_path):
    ref = reference
    workdir = tmp_path / "work"
    workdir.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "anybind.train.recipe", f"data.manifest={manifest}", *COMMON, "data.batch_size=2", "trainer.progress=false",
           f"trainer.strategy={strategy}"]
    proc = subprocess.run(cmd, cwd=workdir, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # exactly one run directory (rank 0's, under Hydra's default runs/<name>/<time>), nothing else in the cwd
    assert sorted(p.name for p in workdir.iterdir()) == ["runs"]
    run_dirs = list((workdir / "runs" / "smoke").iterdir())
    assert len(run_dirs) == 1
    ddp = run_dirs[0]
    assert (ddp / ".hydra" / "config.yaml").exists() and (ddp / "metrics.json").exists()

    # same global batch of 4 (2 per rank): same loss curve and same weights as one process
    assert curve(ddp) == pytest.approx(curve(ref.run_dir), abs=1e-5)
    a, b = load_file(str(ref.checkpoint_path)), load_file(str(ddp / "checkpoints" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4, msg=k)
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["samples_seen"] == 16 and set(metrics["retrieval"]) == set(ref.metrics["retrieval"])


def test_multirun_sweep_runs_each_job(manifest, tmp_path):
    exe = Path(sys.executable).with_name("anybind-train")
    cmd = [str(exe), "-m", f"data.manifest={manifest}", *COMMON, "trainer.max_steps=2", "eval.enabled=false",
           "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = []
    for j in jobs:
        assert (j / "checkpoints" / "last.safetensors").exists() and (j / "metrics.json").exists()
        lrs.append(float(j.joinpath("config.yaml").read_text().split("lr: ")[1].split()[0]))
    assert lrs == [1e-3, 2e-3]
