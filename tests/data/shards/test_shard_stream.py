"""Streaming shards: same tensors as the manifest path, rank/worker splits without duplicates, seeded epochs,
exact resume, damaged tars, mixtures, the upfront ranks x workers check."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

import anybind
from anybind.data.dataset import ManifestDataset
from anybind.data.manifest import load_manifest
from anybind.data.shards import write_shards
from anybind.data.shards.sources import source_from_config
from anybind.data.shards.stream import ShardStream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "train"))
from tinydata import make_tiny_dataset  # noqa: E402

MODS = ("image", "text", "audio", "points", "video")
PAIRS = [("image", m) for m in MODS if m != "image"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    manifest = make_tiny_dataset(root / "raw", n=16, modalities=MODS, missing={"audio": [2]})
    write_shards(manifest, root / "shards", max_count=2, progress=False)  # 8 shards of 2
    model = anybind.create_model({m: f"{'points_transformer' if m == 'points' else m + ('_transformer' if m == 'text' else '_vit')}_test"
                                  for m in MODS})
    return manifest, root / "shards", {m: model.input_contract(m) for m in MODS}


def _stream(folder, contracts, **kw):
    kw.setdefault("batch_size", 2)
    return ShardStream([source_from_config({"shards": str(folder)})], contracts, PAIRS, **kw)


def _ids(stream, worker=None):
    with mock.patch("anybind.data.shards.stream.get_worker_info", return_value=worker):
        return [i for b in stream for i in b["ids"]]


def test_same_tensors_as_the_manifest_path(data):
    manifest, folder, contracts = data
    ds = ManifestDataset(load_manifest(manifest), contracts)
    stream = _stream(folder, contracts, shuffle_buffer=0)
    seen = 0
    for batch in stream:
        ref = ds.collate([ds[int(i)] for i in batch["index"]])
        assert batch["ids"] == ref["ids"] and set(batch["inputs"]) == set(MODS)
        for m in MODS:
            assert torch.equal(batch["valid"][m], ref["valid"][m]), m
            assert torch.equal(batch["inputs"][m], ref["inputs"][m]), m
        seen += len(batch["ids"])
    assert seen == 16 and len(stream) == 8


def test_ranks_and_workers_split_shards_without_duplicates(data):
    _, folder, contracts = data
    ids = []
    for rank in range(2):
        for wid in range(2):
            stream = _stream(folder, contracts, rank=rank, world_size=2)
            got = _ids(stream, mock.Mock(id=wid, num_workers=2))
            assert len(got) == 4  # 8 batches per epoch per rank / 2 workers x batch 2
            ids += got
    assert sorted(ids) == sorted(f"s{i:03d}" for i in range(16))


def test_epochs_reshuffle_by_seed_and_resume_skips_exactly(data):
    _, folder, contracts = data
    a, b = _stream(folder, contracts, shuffle_buffer=4), _stream(folder, contracts, shuffle_buffer=4)
    e0 = _ids(a)
    assert e0 == _ids(b)  # same seed, same epoch: same order
    a.set_epoch(1)
    e1 = _ids(a)
    assert sorted(e1) == sorted(e0) and e1 != e0
    a.set_epoch(1, start=3)  # resume after 3 batches of epoch 1
    assert _ids(a) == e1[6:]
    c = _stream(folder, contracts, shuffle_buffer=4, seed=1)
    assert _ids(c) != e0


def test_too_few_shards_for_ranks_x_workers_fails_upfront(data):
    _, folder, contracts = data
    with pytest.raises(ValueError, match="fewer than ranks x workers = 4 x 3"):
        _stream(folder, contracts, world_size=4).check_workers(3)
    _stream(folder, contracts, world_size=4, resampled=True).check_workers(3)


def test_damaged_shard_and_bad_file_are_skipped_and_reported(data, tmp_path):
    manifest, folder, contracts = data
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in folder.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    tar = bad / "shard-000003.tar"  # samples 6 and 7: cut inside the second sample's members
    tar.write_bytes(tar.read_bytes()[:40000])
    import tarfile, io  # noqa: E401 - a shard with an undecodable image for sample 9
    src = bad / "shard-000004.tar"
    with tarfile.open(src) as t:
        members = [(m, t.extractfile(m).read()) for m in t]
    with tarfile.open(src, "w") as t:
        for m, blob in members:
            if m.name == "000000009.image.png":
                blob = b"not a png"
                m.size = len(blob)
            t.addfile(m, io.BytesIO(blob))
    stream = _stream(bad, contracts, shuffle_buffer=0, epoch_samples=12)
    errors, ids = [], []
    for batch in stream:
        errors += batch["errors"]
        ids += batch["ids"]
        if "s009" in batch["ids"]:
            assert not batch["valid"]["image"][batch["ids"].index("s009")]
    cut = [e for e in errors if e[1] == "shard"]  # sample 7 by its id when its json came before the cut, else its key
    assert len(cut) == 1 and cut[0][0] in ("s007", "000000007") and "shard-000003.tar (member 000000007." in cut[0][2]
    assert any(e[0] == "s009" and e[1] == "image" and "000000009.image.png" in e[2] for e in errors), errors
    assert "s007" not in ids and "s006" in ids and len(errors) == 2


def test_mixture_draws_by_weight(data, tmp_path):
    manifest, folder, contracts = data
    sources = [source_from_config({"shards": str(folder), "name": "shards", "weight": 3.0}),
               source_from_config({"manifest": str(manifest), "name": "loose", "weight": 1.0})]
    stream = ShardStream(sources, contracts, [("image", "text")], 4, epoch_samples=400, shuffle_buffer=8)
    counts = {"shards": 0, "loose": 0}
    for batch in stream:
        for s in batch["sources"]:
            counts[s] += 1
    assert sum(counts.values()) == 400 and 0.65 < counts["shards"] / 400 < 0.85, counts
