"""Manifests, the masked multi-modality dataset, and the mixed / per-pair batch samplers."""

import json

import pytest
import torch
from torch.utils.data import DataLoader

import anybind
from anybind.data.dataset import ManifestDataset
from anybind.data.manifest import load_manifest, write_manifest
from anybind.data.sampling import MixedBatchSampler, PairBatchSampler

from tinydata import make_tiny_dataset

CONTRACTS = {m: anybind.create_encoder(f"{n}_test").input_contract
             for m, n in [("image", "image_vit"), ("text", "text_transformer"), ("points", "points_transformer")]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=12, modalities=("image", "text", "points"),
                             missing={"points": [1, 2], "text": [3]}, corrupt={"image": [4]})


def test_jsonl_manifest_paths_text_missing_and_splits(tiny):
    man = load_manifest(tiny)
    assert len(man) == 12 and man.counts() == {"image": 12, "points": 10, "text": 11}
    s0 = man[0]
    assert s0.items["image"] == str(tiny.parent / "image" / "s000.png")  # relative to the manifest
    assert s0.items["text"].startswith("a red thing") and s0.label == "red"
    assert "points" not in man[1].items and man.indices_with("image", "points") == [0, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    val = man.select("val")
    assert [s.id for s in val] == ["s003", "s007", "s011"] and [s.index for s in val] == [0, 1, 2]
    assert s0.key() == "red" and s0.key("id") == "s000"


def test_csv_manifest_equals_jsonl(tiny, tmp_path):
    rows = [json.loads(line) for line in tiny.read_text().splitlines()]
    cols = ["id", "image", "text", "points", "label", "split"]
    lines = [",".join(cols)] + [",".join(f'"{r.get(c, "")}"' for c in cols) for r in rows]
    csv_path = tiny.parent / "manifest.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    a, b = load_manifest(tiny), load_manifest(csv_path)
    assert [(s.id, s.items, s.label, s.split) for s in a] == [(s.id, s.items, s.label, s.split) for s in b]


def test_manifest_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(anybind.InputError, match=r"bad\.jsonl:2.*not valid JSON"):
        load_manifest(bad)
    dup = write_manifest(tmp_path / "dup.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(anybind.InputError, match="duplicate id 'a'"):
        load_manifest(dup)
    with pytest.raises(anybind.InputError, match="does not exist"):
        load_manifest(tmp_path / "nope.jsonl")


def test_no_split_declared_means_every_sample(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [{"text": "a"}, {"text": "b", "label": 3}])
    man = load_manifest(path, split="train")
    assert [s.id for s in man] == ["0", "1"] and man[1].label == "3"


def test_collate_compacts_rows_masks_missing_and_reports_bad_files(tiny):
    man = load_manifest(tiny)
    ds = ManifestDataset(man, CONTRACTS)
    mods = ("image", "text", "points")
    batch = ds.collate([ds[(i, tuple(m for m in mods if m in man[i].items), mods)] for i in range(6)])
    assert batch["ids"] == [f"s{i:03d}" for i in range(6)]
    assert batch["valid"]["image"].tolist() == [True, True, True, True, False, True]  # s004's png is garbage
    assert batch["valid"]["points"].tolist() == [True, False, False, True, True, True]
    assert batch["valid"]["text"].tolist() == [True, True, True, False, True, True]
    assert batch["inputs"]["image"].shape == (5, 3, 32, 32)
    assert batch["inputs"]["points"].shape == (4, 64, 3) and batch["inputs"]["text"].dtype == torch.long
    assert [(sid, m) for sid, m, _ in batch["errors"]] == [("s004", "image")]
    assert "s004.png" in batch["errors"][0][2]
    strict = ManifestDataset(man, CONTRACTS, skip_errors=False)
    with pytest.raises(anybind.InputError, match="s004.png"):
        strict[(4, ("image",), ("image",))]


def test_preload_keeps_the_same_tensors(tiny):
    man = load_manifest(tiny)
    ds = ManifestDataset(man, CONTRACTS)
    fresh = ds[5]
    assert ds.preload() == 1  # the one broken image
    cached = ds[5]
    for m in fresh["inputs"]:
        assert torch.equal(fresh["inputs"][m], cached["inputs"][m])
    assert ds[4]["errors"]  # failures are not cached: still reported every time


def test_preload_from_workers_holds_no_shared_memory(tiny):
    """Tensors received from workers live in shared memory, one open file descriptor each: the cache copies them out
    (a 6,000-sample, four-modality preload used to exhaust a 20,000-descriptor limit)."""
    ds = ManifestDataset(load_manifest(tiny), CONTRACTS)
    ds.preload(num_workers=1, batch_size=4)
    cached = [x for x in ds._cache.values()]
    assert cached and not any(x.is_shared() for x in cached)
    in_process = ManifestDataset(load_manifest(tiny), CONTRACTS)
    in_process.preload()
    assert in_process._cache.keys() == ds._cache.keys()
    assert all(torch.equal(in_process._cache[k], ds._cache[k]) for k in ds._cache)


def test_mixed_sampler_shards_ranks_and_is_deterministic():
    rows = [("image", "text")] * 10 + [()] * 3 + [("image", "points")] * 7  # 17 usable samples
    one = MixedBatchSampler(rows, ("image", "text", "points"), 4, seed=3)
    ranks = [MixedBatchSampler(rows, ("image", "text", "points"), 2, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(one) == 4 and all(len(s) == 4 for s in ranks)
    for epoch in (0, 1):
        for s in [one, *ranks]:
            s.set_epoch(epoch)
        glob = [[i for i, _, _ in b] for b in one]
        shards = [[[i for i, _, _ in b] for b in s] for s in ranks]
        assert [a + b for a, b in zip(*shards)] == glob  # rank r takes its contiguous slice of each global batch
        flat = [i for b in glob for i in b]
        assert len(set(flat)) == 16 and not set(flat) & {10, 11, 12}
    one.set_epoch(0)
    e0 = [b for b in one]
    one.set_epoch(1)
    assert [b for b in one] != e0  # reshuffled per epoch
    one.set_epoch(0, start=2)
    assert [b for b in one] == e0[2:]  # resume inside an epoch


def test_pair_sampler_follows_weights_and_never_repeats_in_a_batch():
    pools = {"image-audio": (("image", "audio"), list(range(0, 9))),
             "image-points": (("image", "points"), list(range(100, 150)))}
    s = PairBatchSampler(pools, {"image-audio": 3.0, "image-points": 1.0}, 4, seed=0, steps_per_epoch=400)
    batches = list(s)
    counts = {"audio": 0, "points": 0}
    for b in batches:
        mods = {m for _, m, _ in b}
        assert len(mods) == 1  # one pair per step
        counts[next(iter(mods))[1]] += 1
        assert len({i for i, _, _ in b}) == 4
    assert 0.68 < counts["audio"] / 400 < 0.82  # 3:1 sampling weights
    with pytest.raises(ValueError, match="image-audio has 9 samples"):
        PairBatchSampler(pools, {}, 5, world_size=2)


def test_workers_give_the_same_batches_as_the_main_process(tiny):
    man = load_manifest(tiny)
    ds = ManifestDataset(man, CONTRACTS)
    rows = [tuple(m for m in ("image", "text", "points") if m in s.items) for s in man]

    def batches(workers):
        sampler = MixedBatchSampler(rows, ("image", "text", "points"), 3, seed=1)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate, num_workers=workers)
        return list(loader)

    a, b = batches(0), batches(2)
    assert [x["ids"] for x in a] == [x["ids"] for x in b]
    for x, y in zip(a, b):
        for m in x["inputs"]:
            assert torch.equal(x["inputs"][m], y["inputs"][m])
