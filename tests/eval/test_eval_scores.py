"""Scoring on the miniatures: a model that knows the answer scores 1.0, a random model scores near chance, and the
result file says exactly what was measured (split, items found / missing / failed, checksums, model, versions)."""

import json

import pytest
import torch
from layouts import (make_audiocaps, make_clotho, make_coco, make_esc50, make_folder, make_modelnet40, make_msrvtt,
                     write_tone)
from oracle import oracle_model, random_model

import anybind
from anybind.eval.benchmarks import load_benchmark
from anybind.eval.run import format_result, run_benchmark

PNG = b"\x89PNG\r\n\x1a\n"
MAKERS = {
    "esc50": lambda p: make_esc50(p / "ESC-50", per_fold=1, drop=1),
    "modelnet40": lambda p: make_modelnet40(p / "ModelNet40", variant="off"),
    "folder": lambda p: make_folder(p / "classes", per_class=2),
    "msrvtt": lambda p: make_msrvtt(p / "MSRVTT", n=4, drop=1),
    "clotho": lambda p: make_clotho(p / "clotho", n=4, drop=1),
    "audiocaps": lambda p: make_audiocaps(p / "audiocaps", n=4, drop=1),
    "coco": lambda p: make_coco(p / "coco", n=4),
}


def scores(result):
    if result["task"] == "classification":
        (z,) = result["zero_shot"].values()
        return {"top1": z["top1"]}
    return {name: r["R@1"] for name, r in result["retrieval"].items()}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_an_oracle_scores_one_and_the_result_says_what_was_measured(name, tmp_path):
    mini = MAKERS[name](tmp_path)
    data = load_benchmark(name, mini.root)
    model = oracle_model(data.modality, mini.references, mini.keywords)
    out = tmp_path / "run"
    result = run_benchmark(model, data, out)
    assert set(scores(result).values()) == {1.0}, scores(result)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["benchmark"] == name and saved["split"] == json.loads(json.dumps(data.split))
    items = saved["items"]
    assert items["found"] == len(mini.expected) == items["scored"] and items["failed"] == 0
    assert items["missing_items"] == mini.missing and items["missing"] == len(mini.missing)
    assert len(saved["files_sha256"]) == 64 and saved["files_count"] == len(mini.expected)
    assert saved["model"]["weights_sha256"] and saved["model"]["trained"] is False
    assert saved["versions"]["torch"] == torch.__version__.split("+")[0] or saved["versions"]["torch"]
    assert saved["versions"]["anybind"] and saved["versions"]["python"]
    if saved["task"] == "classification":
        (z,) = saved["zero_shot"].values()
        assert saved["templates"] == data.templates and z["n"] == len(mini.expected)
        assert z["chance_top1"] == pytest.approx(1 / len(data.classnames))
        present = {data.classnames[it.label] for it in data.items}
        assert all(saved["per_class"][c] == 1.0 for c in present)
        assert (out / "confusion.png").read_bytes()[:8] == PNG and saved["figures"] == {"confusion": "confusion.png"}
    else:
        for r in saved["retrieval"].values():
            assert r["emergent"] is None and r["MdR"] == 1 and 0 < r["chance_R@1"] < 1
        assert all(c[0] == 1.0 for c in saved["recall_curves"].values())
        assert (out / "recall_at_k.png").read_bytes()[:8] == PNG
    assert "1.0000" in format_result(result)


@pytest.mark.parametrize("name", ["esc50", "modelnet40", "clotho", "coco"])
def test_a_random_model_scores_near_chance(name, tmp_path):
    mini = MAKERS[name](tmp_path)
    data = load_benchmark(name, mini.root)
    result = run_benchmark(random_model(data.modality), data)
    if result["task"] == "classification":
        (z,) = result["zero_shot"].values()
        # a few items per class: allow a wide margin, far below the oracle's 1.0
        assert z["top1"] <= z["chance_top1"] + 0.3, z
    else:
        for r in result["retrieval"].values():
            assert r["R@1"] <= r["chance_R@1"] + 0.4, r


def test_unreadable_files_are_listed_not_scored(tmp_path):
    mini = make_folder(tmp_path / "classes", per_class=2)
    bad = mini.root / mini.expected[3]
    bad.write_bytes(b"\x89PNG not really")
    data = load_benchmark("folder", mini.root)
    result = run_benchmark(oracle_model("image", mini.references, mini.keywords), data)
    items = result["items"]
    assert items["failed"] == 1 and items["failed_items"][0]["id"] == mini.expected[3]
    assert bad.name in items["failed_items"][0]["error"] and items["scored"] == len(mini.expected) - 1
    z = result["zero_shot"]["folder/image"]
    assert z["n"] == len(mini.expected) - 1 and z["top1"] == 1.0


def test_a_checkpoint_records_its_file_digest_and_config(tmp_path):
    mini = make_clotho(tmp_path / "clotho", n=3)
    torch.manual_seed(0)
    model = anybind.create_model({"audio": "audio_vit_test", "text": "text_transformer_test"})
    path = anybind.save_model(tmp_path / "ck" / "model", model, config={"anchor": "audio", "note": "tiny"},
                              extra={"trained_pairs": [["audio", "text"]]})
    loaded = anybind.load(path)
    result = run_benchmark(loaded, load_benchmark("clotho", mini.root), checkpoint=path)
    m = result["model"]
    assert m["trained"] and m["weights_sha256"] == loaded.checkpoint_meta["sha256"]
    assert m["weights_sha256_of"] == "safetensors file" and m["config"]["note"] == "tiny"
    assert m["checkpoint"] == str(path.resolve()) and m["encoders"]["audio"]["name"] == "audio_vit_test"
    assert result["retrieval"]["text->audio"]["emergent"] is False  # the sidecar says audio-text was trained


def test_the_oracle_is_not_fooled_by_a_mislabelled_copy(tmp_path):
    """A miniature whose CSV gives a clip another class's target is scored as wrong: the score tracks labels."""
    mini = make_esc50(tmp_path / "ESC-50", per_fold=1)
    name = mini.expected[0].split("/")[1]
    write_tone(mini.root / "audio" / name, 2)  # overwrite a dog clip with a chirping-birds tone
    result = run_benchmark(oracle_model("audio", mini.references, mini.keywords), load_benchmark("esc50", mini.root))
    assert result["zero_shot"]["esc50/audio"]["top1"] == pytest.approx(24 / 25)
    assert result["per_class"]["dog"] == pytest.approx(4 / 5) and result["confusion"][0][2] == 1


def test_modelnet40_hdf5_variant_scores_one(tmp_path):
    pytest.importorskip("h5py")
    from layouts import make_modelnet40_h5

    mini = make_modelnet40_h5(tmp_path / "modelnet40_ply_hdf5_2048")
    data = load_benchmark("modelnet40", mini.root)
    result = run_benchmark(oracle_model("points", mini.references, mini.keywords), data)
    assert result["split"]["variant"] == "h5" and result["zero_shot"]["modelnet40/points"]["top1"] == 1.0
    assert result["items"]["found"] == len(mini.expected)
