"""Distributed embedding: 2 gloo processes (torchrun) and a simulated SLURM array give the single-process store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from retrieval_assets import make_collection, tiny_model

import anybind
from anybind.retrieval import EmbeddingStore, embed_to_store
from anybind.retrieval.distributed import rank_and_world, run_distributed_embed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    manifest = make_collection(root / "data")
    ckpt = anybind.save_model(root / "model", tiny_model())
    ref = root / "ref"
    embed_to_store(anybind.load(ckpt), manifest, ref, shard_size=4, batch_size=3, progress=False)
    return manifest, ckpt, ref


def same_store(a, b):
    sa, sb = EmbeddingStore.open(a), EmbeddingStore.open(b)
    assert [s.name for s in sa.shards] == [s.name for s in sb.shards] and len(sa.shards) > 4
    np.testing.assert_allclose(sb.vectors(), sa.vectors(), atol=1e-6)
    assert sb.metadata() == sa.metadata()
    assert sb.errors == sa.errors and (b / "errors.jsonl").read_text() == (a / "errors.jsonl").read_text()


def test_rank_and_world_from_launchers():
    assert rank_and_world({}) == (0, 1, "single")
    assert rank_and_world({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2, "torchrun")
    env = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert rank_and_world(env) == (2, 4, "slurm-array")


@pytest.mark.slow  # two torchrun processes: about 20 s on 2 busy cores
def test_two_gloo_processes_equal_the_single_process_store(setup, tmp_path):
    manifest, ckpt, ref = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "anybind.retrieval.distributed", f"input={manifest}", f"out={out}", f"model.checkpoint={ckpt}",
           "shard_size=4", "batch_size=3", "num_workers=0", "progress=false", "index.build=true"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    same_store(ref, out)
    assert (out / "index").is_dir()
    assert "from 2 processes" in r.stdout


def test_slurm_array_tasks_merge_when_the_last_finishes(setup, tmp_path):
    manifest, ckpt, ref = setup
    out = tmp_path / "arr"
    cfg = {"input": str(manifest), "out": str(out), "model": {"checkpoint": str(ckpt)}, "shard_size": 4,
           "batch_size": 3, "num_workers": 0, "progress": False, "index": {"build": False}}
    env = lambda i: {"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "3"}  # noqa: E731
    first = run_distributed_embed(cfg, env(2))
    assert not first["merged"] and not (out / "errors.jsonl").exists()
    assert not run_distributed_embed(cfg, env(0))["merged"]
    last = run_distributed_embed(cfg, env(1))
    assert last["merged"] and last["vectors"] == len(EmbeddingStore.open(ref))
    same_store(ref, out)
    with pytest.raises(ValueError, match="SLURM array"):
        run_distributed_embed({**cfg, "overwrite": True}, env(0))
