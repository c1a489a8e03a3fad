"""Benchmark adapters on miniature copies in each dataset's published layout: every item found, the split applied,
missing and extra files listed, and a wrong or partial layout refused with a message naming what is missing."""

import csv
import importlib.util
import json
import shutil

import pytest
from layouts import (ESC_CLASSES, MN_CLASSES, make_audiocaps, make_clotho, make_coco, make_esc50, make_folder,
                     make_modelnet40, make_msrvtt)

from anybind.eval.benchmarks import BenchmarkError, asset, list_benchmarks, load_benchmark
from anybind.eval.report import files_sha256


def ids(data):
    return sorted(it.id for it in data.items)


def test_names_and_shipped_assets():
    assert list_benchmarks() == ["audiocaps", "clotho", "coco", "esc50", "folder", "modelnet40", "msrvtt"]
    assert len(asset("esc50")["classnames"]) == 50 and len(asset("modelnet40")["classnames"]) == 40
    assert all("{}" in t for t in asset("esc50")["templates"] + asset("modelnet40")["templates"])
    with pytest.raises(BenchmarkError, match="did you mean esc50"):
        load_benchmark("esc5O", "/tmp")
    with pytest.raises(BenchmarkError, match="benchmark.root"):
        load_benchmark("esc50", None)


# ------------------------------------------------------------------------------------------------ ESC-50
def test_esc50_all_folds_and_one_fold(tmp_path):
    mini = make_esc50(tmp_path / "ESC-50", per_fold=1, drop=2, extra=1)
    d = load_benchmark("esc50", mini.root)
    assert ids(d) == sorted(mini.expected) and sorted(d.missing) == sorted(mini.missing) and d.extra == mini.extra
    assert d.split == {"name": "fold", "value": "all"} and d.published == 2000
    assert d.classnames == list(ESC_CLASSES.values())  # target order
    assert d.prompt_names[2:4] == ["chirping birds", "knocking on a wooden door"]
    assert {it.group for it in d.items} == {f"fold{k}" for k in range(1, 6)}
    for it in d.items:  # the label is the CSV's target for that file: <fold>-<src>-<take>-<target>.wav
        assert list(ESC_CLASSES)[it.label] == int(it.id.rsplit("-", 1)[1][:-4])
    three = load_benchmark("esc50", mini.root, fold=3)
    assert len(three.items) == 5 and {it.group for it in three.items} == {"fold3"}
    assert three.split["value"] == [3] and three.missing == [] and three.published == 400
    assert len(load_benchmark("esc50", mini.root, fold=[4, 5]).items) == 10


def test_esc50_wrong_layouts(tmp_path):
    with pytest.raises(BenchmarkError, match="meta/esc50.csv not found"):
        load_benchmark("esc50", tmp_path)
    mini = make_esc50(tmp_path / "ESC-50")
    with pytest.raises(BenchmarkError, match="fold must be 1-5"):
        load_benchmark("esc50", mini.root, fold=6)
    shutil.rmtree(mini.root / "audio")
    with pytest.raises(BenchmarkError, match="audio/ folder is missing"):
        load_benchmark("esc50", mini.root)
    (mini.root / "audio").mkdir()
    with pytest.raises(BenchmarkError, match="none of the 25 clips .* exists"):
        load_benchmark("esc50", mini.root)
    (mini.root / "meta" / "esc50.csv").write_text("filename,fold,category\nx.wav,1,dog\n")
    with pytest.raises(BenchmarkError, match="lacks column.*target"):
        load_benchmark("esc50", mini.root)


# -------------------------------------------------------------------------------------------- ModelNet40
@pytest.mark.parametrize("variant", ["off", "npy", "txt"])
def test_modelnet40_layouts_apply_the_split(tmp_path, variant):
    mini = make_modelnet40(tmp_path / "ModelNet40", variant=variant, train=3, test=2)
    d = load_benchmark("modelnet40", mini.root)
    assert d.split["variant"] == variant and d.split["value"] == "test"
    assert ids(d) == sorted(mini.expected) and len(d.items) == 2 * len(MN_CLASSES)
    assert len(d.classnames) == 40 and d.classnames[d.items[0].label] == d.items[0].id.split("/")[0]
    assert all(d.classnames[it.label] == it.id.split("/")[0] for it in d.items)
    train = load_benchmark("modelnet40", mini.root, split="train")
    assert len(train.items) == 3 * len(MN_CLASSES) and not set(ids(train)) & set(ids(d))
    if variant != "txt":
        assert any("absent" in n and "bathtub" in n for n in d.notes)


def test_modelnet40_missing_shapes_and_wrong_layouts(tmp_path):
    mini = make_modelnet40(tmp_path / "txt", variant="txt")
    (mini.root / "chair" / "chair_0100.txt").unlink()
    d = load_benchmark("modelnet40", mini.root)
    assert d.missing == ["chair/chair_0100.txt"] and len(d.items) == 7
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="no known layout"):
        load_benchmark("modelnet40", tmp_path / "empty")
    with pytest.raises(BenchmarkError, match="split must be train or test"):
        load_benchmark("modelnet40", mini.root, split="val")
    tree = make_modelnet40(tmp_path / "off", variant="off")
    for cls in MN_CLASSES:
        shutil.rmtree(tree.root / cls / "test")
    with pytest.raises(BenchmarkError, match="no test shape found"):
        load_benchmark("modelnet40", tree.root)


def test_modelnet40_h5_needs_h5py(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("\n".join(asset("modelnet40")["classnames"]) + "\n")
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    if importlib.util.find_spec("h5py") is None:
        (root / "ply_data_test0.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
        with pytest.raises(BenchmarkError, match="needs h5py, which is not installed"):
            load_benchmark("modelnet40", root)
        return
    from layouts import make_modelnet40_h5

    mini = make_modelnet40_h5(tmp_path / "h5")
    d = load_benchmark("modelnet40", mini.root)
    assert d.split["variant"] == "h5" and ids(d) == sorted(mini.expected)
    assert d.items[0].source.shape == (256, 3)


# ------------------------------------------------------------------------------------------ retrieval sets
def test_msrvtt_1k_a_and_full(tmp_path):
    mini = make_msrvtt(tmp_path / "MSRVTT", n=4, drop=1)
    d = load_benchmark("msrvtt", mini.root)
    assert ids(d) == sorted(mini.expected) and d.missing == mini.missing
    assert d.split == {"name": "split", "value": "1k-A", "index": "MSRVTT_JSFUSION_test.csv"}
    assert len(d.captions) == 4 and d.captions[1] == ("video7001", "a clip about banana on a table")
    full = load_benchmark("msrvtt", mini.root, split="full")
    assert len(full.captions) == 8 and "video1" not in {v for v, _ in full.captions}  # a training video
    assert d.summary()["captions_of_found_items"] == 3
    with pytest.raises(BenchmarkError, match="split must be one of 1k-A, full"):
        load_benchmark("msrvtt", mini.root, split="7k")
    (mini.root / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(BenchmarkError, match="MSRVTT_JSFUSION_test.csv not found"):
        load_benchmark("msrvtt", mini.root)
    shutil.rmtree(mini.root / "videos")
    with pytest.raises(BenchmarkError, match="the video folder not found .*videos/all"):
        load_benchmark("msrvtt", mini.root, split="full")


def test_clotho_captions_missing_and_extra(tmp_path):
    mini = make_clotho(tmp_path / "clotho", n=4, drop=1, extra=2)
    d = load_benchmark("clotho", mini.root)
    assert ids(d) == sorted(mini.expected) and d.missing == mini.missing and d.extra == mini.extra
    assert len(d.captions) == 20 and d.summary()["captions_of_found_items"] == 15
    with pytest.raises(BenchmarkError, match="clotho_captions_validation.csv not found"):
        load_benchmark("clotho", mini.root, split="validation")
    shutil.rmtree(mini.root / "evaluation")
    with pytest.raises(BenchmarkError, match="the evaluation audio folder not found"):
        load_benchmark("clotho", mini.root)


def test_audiocaps_clip_names_and_missing(tmp_path):
    mini = make_audiocaps(tmp_path / "audiocaps", n=4, drop=1)
    d = load_benchmark("audiocaps", mini.root)
    assert ids(d) == sorted(mini.expected) and d.missing == mini.missing
    assert len(d.captions) == 8 and sorted(d.files) == sorted(
        f"test/{p.name}" for p in (mini.root / "test").iterdir())
    with pytest.raises(BenchmarkError, match="val.csv not found"):
        load_benchmark("audiocaps", mini.root, split="val")
    with (mini.root / "test.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["audiocap_id", "caption"], ["1", "x"]])
    with pytest.raises(BenchmarkError, match="lacks column.*youtube_id"):
        load_benchmark("audiocaps", mini.root)


def test_coco_karpathy_and_official_captions(tmp_path):
    mini = make_coco(tmp_path / "coco", n=4)
    d = load_benchmark("coco", mini.root)
    assert ids(d) == sorted(mini.expected) and len(d.captions) == 20  # the two training images are left out
    assert d.split["format"] == "karpathy" and d.split["value"] == "test" and d.published == 5000
    assert len(load_benchmark("coco", mini.root, split="train").items) == 2
    off = make_coco(tmp_path / "coco17", n=3, official=True)
    d = load_benchmark("coco", off.root, split="val2017")
    assert ids(d) == sorted(off.expected) and d.split["format"] == "captions" and len(d.captions) == 15
    assert ids(load_benchmark("coco", off.root)) == ids(d)  # no Karpathy file: the captions JSON found
    with pytest.raises(BenchmarkError, match="no caption file found .*dataset_coco.json"):
        load_benchmark("coco", tmp_path)
    (off.root / "annotations" / "captions_val2017.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(BenchmarkError, match="neither Karpathy"):
        load_benchmark("coco", off.root, split="val2017")


def test_class_folders(tmp_path):
    mini = make_folder(tmp_path / "flat", per_class=2)
    d = load_benchmark("folder", mini.root)
    assert ids(d) == sorted(mini.expected) and d.extra == mini.extra and d.modality == "image"
    assert d.classnames == ["blue_sky", "green_field", "red_square"] and d.prompt_names[0] == "blue sky"
    assert all(d.classnames[it.label] == it.id.split("/")[0] for it in d.items)
    named = load_benchmark("folder", mini.root,
                           classnames={"blue_sky": "sky", "green_field": "grass", "red_square": "red"})
    assert named.prompt_names == ["sky", "grass", "red"]
    with pytest.raises(BenchmarkError, match="no name for folder"):
        load_benchmark("folder", mini.root, classnames={"blue_sky": "sky"})
    split = make_folder(tmp_path / "split", per_class=1, split="val")
    (split.root / "train" / "x").mkdir(parents=True)
    with pytest.raises(BenchmarkError, match="holds split folders train, val; pick one with benchmark.split"):
        load_benchmark("folder", split.root)
    assert ids(load_benchmark("folder", split.root, split="val")) == sorted(split.expected)
    with pytest.raises(BenchmarkError, match="no split folder 'test'"):
        load_benchmark("folder", split.root, split="test")
    with pytest.raises(BenchmarkError, match="no audio file"):
        load_benchmark("folder", mini.root, modality="audio")
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    with pytest.raises(BenchmarkError, match="found 1 class folder"):
        load_benchmark("folder", one.parent)


def test_file_list_checksum_ignores_root_and_order(tmp_path):
    a = make_clotho(tmp_path / "a", n=3)
    b = make_clotho(tmp_path / "b", n=3)
    da, db = load_benchmark("clotho", a.root), load_benchmark("clotho", b.root)
    assert files_sha256(da.files) == files_sha256(reversed(db.files))
    (b.root / "evaluation" / "clip 2 (field recording).wav").unlink()
    assert files_sha256(load_benchmark("clotho", b.root).files) != files_sha256(da.files)
