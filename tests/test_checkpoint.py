import json

import pytest
import torch

from anybind.checkpoint import atomic_write_bytes, load_tensors, save_tensors
from anybind.errors import CheckpointError


def test_tensors_round_trip_exactly(tmp_path):
    t = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2, 2).t()}  # non-contiguous too
    save_tensors(tmp_path / "ck", t, {"note": "x"})
    loaded, meta = load_tensors(tmp_path / "ck.safetensors")
    assert meta["note"] == "x" and meta["format"] == "anybind"
    for k in t:
        assert torch.equal(loaded[k], t[k])


def test_damaged_weights_are_detected(tmp_path):
    save_tensors(tmp_path / "ck", {"a": torch.randn(64)})
    p = tmp_path / "ck.safetensors"
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_tensors(p)


def test_missing_sidecar_is_incomplete(tmp_path):
    save_tensors(tmp_path / "ck", {"a": torch.randn(4)})
    (tmp_path / "ck.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_tensors(tmp_path / "ck")


def test_foreign_sidecar_rejected(tmp_path):
    save_tensors(tmp_path / "ck", {"a": torch.randn(4)})
    (tmp_path / "ck.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not an anybind"):
        load_tensors(tmp_path / "ck")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.bin"]


def test_a_memory_mapped_load_is_the_same_model_and_never_writes_the_file(tmp_path):
    import hashlib

    import anybind

    torch.manual_seed(0)
    model = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test"})
    path = anybind.save_model(tmp_path / "m.safetensors", model)
    weights = tmp_path / "m.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    plain, mapped = anybind.load(path), anybind.load(path, mmap=True)
    for (k, a), (k2, b) in zip(plain.state_dict().items(), mapped.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(plain.encoders["image"](x), mapped.encoders["image"](x), atol=1e-5)
    with torch.no_grad():
        next(mapped.parameters()).add_(1.0)  # copy-on-write: the page is copied, the file stays as it was
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        anybind.load(path, mmap=True)
