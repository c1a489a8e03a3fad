"""End-to-end training on tiny generated data: smoke run, run outputs, bad samples, anchor -> bind chaining."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

import anybind
from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

MODS = ("image", "text", "audio", "points", "video")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    # sample 5 has a broken image, sample 6 no audio, sample 8 a broken point cloud
    return make_tiny_dataset(root, n=25, modalities=MODS, val_every=5, missing={"audio": [6]},
                             corrupt={"image": [5], "points": [8]})


def test_smoke_run_writes_checkpoint_metrics_and_logs(world, tmp_path):
    cfg = compose_train_config([f"data.manifest={world}", "debug=smoke"])
    result = run(cfg, run_dir=tmp_path / "smoke")

    # checkpoint: loadable by the library, towers and input contracts included
    model = anybind.load(result.checkpoint_path)
    assert sorted(model.modalities) == sorted(MODS)
    assert model.input_contract("image")["image_size"] == 32
    sidecar = json.loads(result.checkpoint_path.with_suffix(".json").read_text())
    assert sorted(map(sorted, sidecar["trained_pairs"])) == sorted(sorted(["image", m]) for m in MODS if m != "image")

    # metrics.json: every ordered pair among the trained modalities, emergent exactly for non-image pairs
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    ret = metrics["retrieval"]
    assert set(ret) == {f"{a}->{b}" for a in MODS for b in MODS if a != b}
    for pair, v in ret.items():
        q, g = pair.split("->")
        assert v["emergent"] == ("image" not in (q, g))
        assert 0.0 <= v["R@1"] <= v["R@5"] <= v["R@10"] <= 1.0 and v["n"] > 0
    assert set(metrics["zero_shot"]) == {f"data/{m}" for m in MODS if m != "text"}
    assert metrics["step"] == 4

    # logs: one CSV row per step, TensorBoard events, a heatmap, the resolved config
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss"]) > 0 for r in rows) and "loss/image-audio" in rows[0]
    assert any((result.run_dir / "tensorboard").iterdir())
    assert (result.run_dir / "retrieval_R@1.png").stat().st_size > 0
    assert "model_size: test" in (result.run_dir / "config.yaml").read_text()


def test_bad_samples_are_skipped_counted_and_reported(world, tmp_path):
    # mixed batching over all 20 training samples for 2 epochs: both broken files are met twice each
    cfg = compose_train_config([f"data.manifest={world}", "debug=smoke", "trainer.max_steps=10",
                                "modality=[image,text,points]", "eval.enabled=false", "trainer.ckpt_every=0"])
    result = run(cfg, run_dir=tmp_path / "bad")
    errors = result.metrics["data_errors"]
    assert errors["skipped"] == 4
    assert {(e["id"], e["modality"]) for e in errors["examples"]} == {("s005", "image"), ("s008", "points")}
    assert all("s005.png" in e["error"] or "s008.npy" in e["error"] for e in errors["examples"])
    with (result.run_dir / "metrics.csv").open() as f:
        assert int(list(csv.DictReader(f))[-1]["data_errors"]) == 4


def test_bad_sample_raises_when_skipping_is_off(world, tmp_path):
    cfg = compose_train_config([f"data.manifest={world}", "debug=smoke", "trainer.max_steps=10",
                                "modality=[image,text,points]", "data.skip_errors=false", "eval.enabled=false"])
    with pytest.raises(anybind.InputError, match=r"s00[58]\.(png|npy)"):
        run(cfg, run_dir=tmp_path / "strict")


def test_pair_batching_and_siglip_train(world, tmp_path):
    cfg = compose_train_config([
        f"data.manifest={world}", "debug=smoke", "modality=[image,text,points]", "data.batching=pair", "loss=siglip",
        "pairs=[{modalities:[image,points],sampling_weight:1.0,loss_weight:2.0},{modalities:[text,points],sampling_weight:0.0}]",
        "eval.enabled=false", "trainer.max_steps=3"])
    result = run(cfg, run_dir=tmp_path / "pair")
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    # text-points has sampling weight 0: never drawn, so its loss column stays empty; the total is 2 x image-points
    assert all(float(r["loss/image-points"]) > 0 for r in rows)
    assert all(r["loss/text-points"] == "" for r in rows)
    for r in rows:
        assert float(r["loss"]) == pytest.approx(2.0 * float(r["loss/image-points"]), rel=1e-5)


def test_anchor_then_bind_freezes_loaded_towers(world, tmp_path):
    anchor = run(compose_train_config([f"data.manifest={world}", "experiment=anchor", "debug=smoke",
                                       "eval.enabled=false", "trainer.max_steps=2"]), run_dir=tmp_path / "anchor")
    bind = run(compose_train_config([f"data.manifest={world}", "experiment=bind", "debug=smoke",
                                     "modality=[image,text,points]", f"init_from={anchor.run_dir}",
                                     "trainer.max_steps=2", "eval.zero_shot=false"]),
               run_dir=tmp_path / "bind")
    a, b = load_file(str(anchor.checkpoint_path)), load_file(str(bind.checkpoint_path))
    for k, v in a.items():  # image and text come from the anchor and stay frozen
        torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=k)
    torch.manual_seed(0)  # the seed the recipe built the towers with: the points tower must have moved
    fresh = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test",
                                  "points": "points_transformer_test"})
    assert any(not torch.equal(b[f"encoders.points.{k}"], v) for k, v in fresh.encoders.points.state_dict().items())
    ret = bind.metrics["retrieval"]
    assert ret["image->text"]["emergent"] is False  # trained in the anchor stage
    assert ret["points->text"]["emergent"] is True and ret["image->points"]["emergent"] is False
    assert sorted(map(sorted, json.loads(bind.checkpoint_path.with_suffix(".json").read_text())["trained_pairs"])) == \
        sorted(sorted(p) for p in [["image", "text"], ["image", "points"]])


def test_bf16_autocast_accumulation_and_grad_checkpointing(world, tmp_path):
    cfg = compose_train_config([f"data.manifest={world}", "debug=smoke", "modality=[image,text]", "trainer.precision=bf16",
                                "trainer.grad_accum=2", "trainer.grad_checkpointing=true", "data.batch_size=2",
                                "trainer.max_steps=3", "eval.enabled=false"])
    result = run(cfg, run_dir=tmp_path / "amp")
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(0 < float(r["loss"]) < 10 and float(r["grad_norm"]) > 0 for r in rows)
    assert result.metrics["samples_seen"] == 3 * 2 * 2  # steps x accumulation x batch
    model = anybind.load(result.checkpoint_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
