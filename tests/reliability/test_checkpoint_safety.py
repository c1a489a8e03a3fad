"""Loading checkpoints someone else wrote: the sidecar is checked before anything is built, errors name the file,
pointers stay inside their run, and no error repeats torch's advice to load with weights_only=False."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import anybind
import anybind.checkpoint as ckpt
from anybind.io import tensorfile
from anybind.errors import CheckpointError, ContractError, InputError, ShapeMismatchError
from anybind.train.checkpointing import CheckpointManager, find_resume_checkpoint, load_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def saved(tmp_path) -> Path:
    torch.manual_seed(0)
    anybind.save_model(tmp_path / "model", anybind.create_model({"image": "image_vit_test"}))
    return tmp_path / "model"


def edit_sidecar(path: Path, edit) -> None:
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    edit(meta)
    sidecar.write_text(json.dumps(meta))


def forbid_real_build(monkeypatch) -> list:
    """Record real (non-meta) tower builds and weight reads: a refused sidecar must cause neither."""
    calls = []
    build, read = ckpt._build_towers, ckpt.read_weights
    monkeypatch.setattr(ckpt, "_build_towers", lambda specs, sidecar, *, meta_device: (
        calls.append("build") if not meta_device else None, build(specs, sidecar, meta_device=meta_device))[1])
    monkeypatch.setattr(ckpt, "read_weights", lambda *a, **k: (calls.append("read"), read(*a, **k))[1])
    return calls


# ------------------------------------------------------------------------------------------------ item 5: sidecar first
def test_a_sidecar_that_inflates_the_width_fails_before_any_allocation(saved, monkeypatch):
    """Issue 15: a 0.5 MB checkpoint whose sidecar says width=65536 made anybind.load allocate 12.9 GB."""
    edit_sidecar(saved, lambda m: m["encoders"]["image"].setdefault("kwargs", {}).update(width=65536))
    calls = forbid_real_build(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(ShapeMismatchError) as err:
        anybind.load(saved)
    assert time.perf_counter() - t0 < 5 and calls == []
    e = err.value
    assert e.file == str(saved.with_suffix(".safetensors")) and e.tensor.startswith("encoders.image.")
    assert 65536 in e.expected and 65536 not in e.found
    assert str(saved.with_suffix(".safetensors")) in str(e) and e.tensor in str(e) and str(e.found) in str(e)


def test_shape_mismatch_is_an_anybind_error_naming_file_tensor_and_shapes(saved):
    edit_sidecar(saved, lambda m: m["encoders"]["image"].setdefault("kwargs", {}).update(width=48))
    with pytest.raises(ShapeMismatchError, match=r"tensor 'encoders\.image\..*' has shape \(.*32.*\) in the file but "
                                                 r"the model its sidecar describes expects \(.*48.*\)"):
        anybind.load(saved)


def test_a_sidecar_whose_towers_dwarf_the_file_is_refused(saved, monkeypatch):
    # strict=False tolerates missing tensors, never towers far larger than the file: a 500 MB text tower that the
    # 100 kB file does not hold
    def add_text(meta):
        meta["encoders"]["text"] = {"name": "text_transformer_base", "kwargs": {"embed_dim": meta["embed_dim"]}}

    edit_sidecar(saved, add_text)
    calls = forbid_real_build(monkeypatch)
    with pytest.raises(CheckpointError, match=r"describes towers of 0\.\d GiB but model\.safetensors holds 0\.\d MiB"):
        anybind.load(saved, strict=False)
    assert calls == []


@pytest.mark.parametrize("key, value", [("image_size", 100000), ("image_size", -3), ("image_size", "huge")])
def test_contract_values_are_bounded_before_loading(saved, monkeypatch, key, value):
    """Issue 15: input_contract.image_size=100000 ended in MemoryError at the first embed."""
    edit_sidecar(saved, lambda m: m["encoders"]["image"]["input_contract"].update({key: value}))
    calls = forbid_real_build(monkeypatch)
    with pytest.raises(CheckpointError, match=rf"image tower: input contract {key}="):
        anybind.load(saved)
    assert calls == []


def test_a_contract_whose_items_would_be_enormous_is_refused():
    from anybind.modality import check_contract_bounds

    with pytest.raises(ContractError, match="every item"):
        check_contract_bounds({"image_size": 4096, "frames": 256, "clips": 64}, "video tower")
    assert check_contract_bounds({"image_size": 224, "frames": 2, "clips": 5}, "video tower")


def test_transforms_refuse_contract_values_past_their_bound():
    model = anybind.create_model({"image": "image_vit_test"})
    model.encoders["image"].input_contract = {**model.input_contract("image"), "image_size": 100000}
    with pytest.raises(ContractError, match="'image_size' is 100000, over its bound 4096"):
        model.embed({"image": [torch.rand(3, 8, 8)]})


def test_builder_arguments_are_bounded(saved):
    edit_sidecar(saved, lambda m: m["encoders"]["image"].setdefault("kwargs", {}).update(depth=10**6))
    with pytest.raises(CheckpointError, match=r"depth=1000000 is outside 0..1024"):
        anybind.load(saved)


def test_a_sidecar_without_the_weights_sha256_is_an_error_not_a_skipped_check(saved):
    edit_sidecar(saved, lambda m: m.pop("sha256"))
    with pytest.raises(CheckpointError, match="does not hold the sha256 of its weights"):
        anybind.load(saved)
    with pytest.raises(CheckpointError, match="does not hold the sha256"):
        ckpt.load_tensors(saved, verify=False)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(encoders=[]), "names no towers"),
    (lambda m: m["encoders"]["image"].update(name=7), "expected {'name'"),
    (lambda m: m["encoders"]["image"].update(kwargs=[1]), "'kwargs' must be a mapping"),
    (lambda m: m["encoders"]["image"].update(name="image_vit_nope"), "cannot be built.*image_vit_nope"),
    (lambda m: m["encoders"]["image"].update(kwargs={"bogus": 1}), "cannot be built.*bogus"),
])
def test_malformed_sidecars_are_named(saved, edit, match):
    edit_sidecar(saved, edit)
    with pytest.raises(CheckpointError, match=match) as err:
        anybind.load(saved)
    assert str(saved.with_suffix(".json")) in str(err.value)


def test_an_oversized_sidecar_is_not_parsed(saved, monkeypatch):
    monkeypatch.setattr(tensorfile, "MAX_SIDECAR_BYTES", 100)
    with pytest.raises(CheckpointError, match="a sidecar holds at most 100"):
        anybind.load(saved)


def test_every_registered_encoder_builds_on_the_meta_device():
    """load() checks a sidecar by building its towers on the meta device: every builder must allow it."""
    from anybind.registry import get_encoder_entry

    skip = {"hf_text", "hf_audio"}  # need a local model folder (tests/encoders/test_hf.py loads them)
    for name in anybind.list_encoders():
        if name in skip:
            continue
        m = get_encoder_entry(name).modality
        model = ckpt._build_towers({m: {"name": name}}, Path("sidecar.json"), meta_device=True)
        assert all(t.is_meta for t in (*model.parameters(), *model.buffers())), name


# ------------------------------------------------------------------------------------------------ item 6: errors
def test_anybind_embed_reports_a_shape_mismatch_in_one_line(saved, tmp_path):
    edit_sidecar(saved, lambda m: m["encoders"]["image"].setdefault("kwargs", {}).update(width=48))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    proc = subprocess.run([sys.executable, "-c", "from anybind.cli import embed_main; embed_main()",
                           f"input={manifest}", f"out={tmp_path / 'emb'}", f"model.checkpoint={saved}",
                           "hydra.run.dir=" + str(tmp_path / "hydra")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert lines == [lines[0]] and lines[0].startswith("anybind-embed: error: checkpoint ")
    assert "has shape" in lines[0] and "Traceback" not in proc.stderr


def test_a_state_file_naming_a_missing_tensor_is_a_clear_error(tmp_path):
    from anybind.train.checkpointing import save_state

    save_state(tmp_path / "state", {"step": 3, "m": torch.zeros(2)})
    edit_sidecar(tmp_path / "state", lambda m: m["tree"].update(extra={"__tensor__": "optimizer.state.9.exp_avg"}))
    with pytest.raises(CheckpointError, match=r"state\.json names tensor 'optimizer\.state\.9\.exp_avg', which its "
                                              r"\.safetensors file does not hold"):
        load_state(tmp_path / "state")


@pytest.mark.parametrize("target", ["../../other/checkpoints/step_000001", "/etc", "step_000001/../../x", "model"])
def test_a_pointer_leading_outside_the_run_is_refused(tmp_path, target):
    run = tmp_path / "run"
    CheckpointManager(run).save(1, anybind.create_model({"image": "image_vit_test"}), {"step": 1})
    last = run / "checkpoints" / "last"
    last.unlink()
    os.symlink(target, last)
    with pytest.raises(CheckpointError, match="points to .*never a path elsewhere"):
        find_resume_checkpoint("latest", run)


def test_a_legacy_pointer_outside_the_run_or_dangling_is_refused(tmp_path):
    run = tmp_path / "run"
    CheckpointManager(run).save(1, anybind.create_model({"image": "image_vit_test"}), {"step": 1})
    ck = run / "checkpoints"
    (ck / "last").unlink()
    (ck / "latest.json").write_text(json.dumps({"step": 1, "path": "../../../elsewhere"}))
    with pytest.raises(CheckpointError, match="never a path elsewhere"):
        find_resume_checkpoint("latest", run)
    (ck / "latest.json").write_text(json.dumps({"step": 7, "path": "step_000007"}))  # a folder a kill removed
    with pytest.raises(CheckpointError, match="lacks"):  # not a silent restart from step 0
        find_resume_checkpoint("latest", run)


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("reader", ["imagebind", "pretrained", "tensor_file"])
def test_load_errors_never_suggest_weights_only_false(tmp_path, reader):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"a": _Payload()}, f)
    torch.save({"w": torch.zeros(2), "x": _Payload()}, path)
    if reader == "imagebind":
        from anybind.compat.imagebind import load_imagebind

        call, error = (lambda: load_imagebind(path)), CheckpointError
    elif reader == "pretrained":
        from encoders._common import read_state_dict

        call, error = (lambda: read_state_dict(path)), CheckpointError
    else:
        from anybind.data.readers.tensors import read_tensor_file

        call, error = (lambda: read_tensor_file(path, "depth")), InputError
    with pytest.raises(error) as err:
        call()
    text = str(err.value)
    assert str(path) in text and "weights_only" not in text and "trust" not in text.lower()
    assert "without running code" in text


# ------------------------------------------------------------------------------------------------ training / eval errors
def test_dataset_errors_name_the_file_not_in_memory(tmp_path):
    """A transform that cannot know the file (ImageBind's depth layout check) still gets it named."""
    from anybind.data.dataset import ManifestDataset
    from anybind.data.manifest import load_manifest

    np.save(tmp_path / "d.npy", np.zeros((2, 5, 5), np.float32))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "s0", "depth": "d.npy"}) + "\n")
    ds = ManifestDataset(load_manifest(tmp_path / "m.jsonl"), {"depth": {"compat": "imagebind", "image_size": 8}},
                         skip_errors=False)
    with pytest.raises(InputError) as err:
        ds.load(0, "depth")
    assert err.value.source == str(tmp_path / "d.npy") and "<in-memory>" not in str(err.value)
