"""anybind-shard: WebDataset tars + shards.json, bounded shards, bad samples skipped, atomic resume."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from anybind.checkpoint import sha256_file
from anybind.data.shards import write_shards
from anybind.data.shards import writer as shard_writer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "train"))
from tinydata import make_tiny_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_dataset(root, n=10, corrupt={"audio": [3]}, missing={"points": [5]})


def test_shards_hold_raw_bytes_and_an_index(tiny, tmp_path):
    index = write_shards(tiny, tmp_path / "s", max_count=4, progress=False)
    names = [s["name"] for s in index["shards"]]
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["samples"] for s in index["shards"]] == [4, 4, 2]
    assert index["samples"] == 10 and index["skipped"] == 1
    assert index["counts"] == {"audio": 9, "image": 10, "points": 9, "text": 10}
    assert index["errors"][0]["id"] == "s003" and index["errors"][0]["modality"] == "audio"
    assert "s003.wav" in index["errors"][0]["error"]
    on_disk = json.loads((tmp_path / "s" / "shards.json").read_text())
    assert on_disk["shards"] == index["shards"] and on_disk["anybind_version"]
    for s in index["shards"]:
        assert sha256_file(tmp_path / "s" / s["name"]) == s["sha256"]
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    first = json.loads(members["000000000.json"])
    assert first["id"] == "s000" and first["label"] == "red"
    assert members["000000000.image.png"] == (tiny.parent / "image" / "s000.png").read_bytes()
    assert members["000000000.text.txt"].decode() == "a red thing number 0"
    assert "000000003.audio.wav" not in members and "000000003.image.png" in members  # the bad file only
    assert not list((tmp_path / "s").glob(".*tmp")) and not (tmp_path / "s" / "shards.partial.json").exists()


def test_size_bound_and_folder_input(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(5):
        (folder / f"n{i}.txt").write_text("x" * 3000)
    (folder / "notes.unknown").write_text("ignored")
    index = write_shards(folder, tmp_path / "s", max_size=5000, progress=False)
    assert [s["samples"] for s in index["shards"]] == [2, 2, 1]  # a shard closes once it passes max_size
    assert index["counts"] == {"text": 5}


def test_resume_after_a_kill_keeps_finished_shards(tiny, tmp_path, monkeypatch):
    out = tmp_path / "s"
    real = shard_writer.encode_sample
    calls = {"n": 0}

    def dying(key, sample, **kw):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(key, sample, **kw)

    monkeypatch.setattr(shard_writer, "encode_sample", dying)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tiny, out, max_count=3, progress=False)
    assert not (out / "shards.json").exists()
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(out.glob(".*tmp"))
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    monkeypatch.setattr(shard_writer, "encode_sample", real)
    calls["n"] = 0
    index = write_shards(tiny, out, max_count=3, progress=False)
    assert index["samples"] == 10 and [s["samples"] for s in index["shards"]] == [3, 3, 3, 1]
    assert {p: (out / p).stat().st_mtime_ns for p in done} == done  # finished shards were not rewritten
    fresh = write_shards(tiny, tmp_path / "fresh", max_count=3, progress=False)
    assert [s["sha256"] for s in fresh["shards"]] == [s["sha256"] for s in index["shards"]]


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "anybind.data.shards.cli", f"input={tmp_path / 'nope'}",
                        f"out={tmp_path / 'o'}"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
