"""``anybind.io.read_safetensors``: plain reads into fresh (aligned) tensors, equal to the safetensors library's
own load, and a clear error for a header that lies about its tensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from anybind.io import read_safetensors


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(3, 5, generator=g), "odd": torch.randn(7, generator=g).to(torch.bfloat16),
            "scalar": torch.tensor(2.5), "ids": torch.arange(11, dtype=torch.int64), "mask": torch.tensor([True, False]),
            "empty": torch.zeros(0, 4)}


def test_equals_the_library_and_every_tensor_is_aligned(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    ours, ref = read_safetensors(path), load_file(str(path))
    assert sorted(ours) == sorted(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k])
        if ours[k].numel():
            assert ours[k].data_ptr() % 64 == 0, k  # a memory-mapped load leaves most tensors at odd offsets


def _with_header(path, edit):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])


@pytest.mark.parametrize("edit, problem", [
    (lambda h: h["a"].update(data_offsets=[0, 1 << 30]), "do not fit"),
    (lambda h: h["a"].update(shape=[4, 5]), "do not fit"),
])
def test_a_lying_header_is_refused_naming_the_tensor(tmp_path, edit, problem):
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    _with_header(path, edit)
    with pytest.raises(ValueError, match=rf"w.safetensors: tensor 'a'.*{problem}"):
        read_safetensors(path)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="w.safetensors"):
        read_safetensors(path)


def test_the_digest_is_computed_while_reading(tmp_path, monkeypatch):
    import hashlib

    import anybind.io.tensorfile as tf
    from anybind.errors import CheckpointError

    path = tmp_path / "w.safetensors"
    big = {"w": torch.randn(300, 1000), "b": torch.randn(1000), **_tensors()}
    save_file(big, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(tf, "_READ_CHUNK", 4096)  # many chunks per tensor, hashed in file order
    monkeypatch.setattr(tf, "sha256_file", lambda p: pytest.fail("a second pass over the file"))
    ours = read_safetensors(path, sha256=digest)
    for k, v in big.items():
        assert torch.equal(ours[k], v)
    raw = bytearray(path.read_bytes())
    raw[-5000] ^= 0x01  # one bit inside the largest tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        read_safetensors(path, sha256=digest)


def test_a_file_whose_tensors_leave_a_gap_is_hashed_whole(tmp_path):
    import hashlib

    from anybind.errors import CheckpointError

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(4, dtype=torch.float32), "b": torch.arange(4, 8, dtype=torch.float32)}, str(path))
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    first = min(header, key=lambda k: header[k]["data_offsets"][0] if k != "__metadata__" else 1 << 60)
    del header[first]  # its bytes stay in the file: the remaining tensor does not tile the data section
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = read_safetensors(path, sha256=digest)
    assert list(kept) == [k for k in ("a", "b") if k != first]
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        read_safetensors(path, sha256="0" * 64)
