"""Training-state files (no pickle), RNG capture, checkpoint directories, pruning and resume discovery."""

import os
import random

import numpy as np
import pytest
import torch

import anybind
from anybind.errors import CheckpointError
from anybind.train.checkpointing import (CheckpointManager, capture_rng, find_resume_checkpoint, load_state,
                                         restore_rng, save_state)


def test_state_round_trip_keeps_types_and_tensors(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))], lr=0.1)
    opt.zero_grad()
    sum(p.sum() for g in opt.param_groups for p in g["params"]).backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "step": 7, "pair": ("a", 1), "none": None, "f": 0.5,
             "rng": capture_rng(), "nested": [{"x": torch.arange(3)}]}
    save_state(tmp_path / "state", state)
    assert b"pickle" not in (tmp_path / "state.safetensors").read_bytes()[:200]
    back = load_state(tmp_path / "state")
    assert back["step"] == 7 and back["pair"] == ("a", 1) and back["none"] is None and back["f"] == 0.5
    assert torch.equal(back["nested"][0]["x"], torch.arange(3))
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys survive JSON
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))], lr=0.1)
    fresh.load_state_dict(back["optimizer"])
    torch.testing.assert_close(fresh.state[fresh.param_groups[0]["params"][0]]["exp_avg"],
                               opt.state[opt.param_groups[0]["params"][0]]["exp_avg"])


def test_rng_restore_replays_every_generator():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_manager_links_last_prunes_and_finds_latest(tmp_path):
    model = anybind.create_model({"image": "image_vit_test"})
    run = tmp_path / "runs" / "x" / "t1"
    mgr = CheckpointManager(run, keep_last=2)
    for step in (1, 2, 3):
        mgr.save(step, model, {"step": step})
    ckpts = run / "checkpoints"
    steps = sorted(p.name for p in ckpts.glob("step_*"))
    assert steps == ["step_000002", "step_000003"]
    assert os.readlink(ckpts / "last") == "step_000003"  # the one pointer
    assert anybind.load(ckpts / "last").modalities == ["image"]
    assert anybind.load(ckpts / "last.safetensors").modalities == ["image"]
    assert os.path.samefile(ckpts / "last.safetensors", ckpts / "step_000003" / "model.safetensors")
    assert os.path.samefile(ckpts / "last.json", ckpts / "step_000003" / "model.json")
    assert find_resume_checkpoint("latest", run) == ckpts / "step_000003"
    assert find_resume_checkpoint(str(run), tmp_path) == ckpts / "step_000003"
    assert find_resume_checkpoint(str(ckpts), tmp_path) == ckpts / "step_000003"
    assert find_resume_checkpoint(str(ckpts / "last"), tmp_path) == (ckpts / "step_000003").resolve()
    # a fresh directory of the same experiment: resume=latest never continues a sibling run
    new = tmp_path / "runs" / "x" / "t2"
    new.mkdir()
    assert find_resume_checkpoint("latest", new) is None
    assert find_resume_checkpoint(str(run), new) == ckpts / "step_000003"  # an explicit path does
    assert find_resume_checkpoint("latest", tmp_path / "elsewhere" / "a") is None
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        find_resume_checkpoint(str(new), new)


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path):
    model = anybind.create_model({"image": "image_vit_test"})
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(1, model, {"step": 1})
    (tmp_path / "checkpoints" / ".step_000002.tmp").mkdir()  # what a kill during a write leaves behind
    assert mgr.latest() == tmp_path / "checkpoints" / "step_000001"
    assert load_state(mgr.latest() / "state")["step"] == 1
