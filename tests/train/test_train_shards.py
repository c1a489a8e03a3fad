"""Training from shards: data=shards end to end in worker processes, bad samples reported, exact resume."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from anybind.data.shards import write_shards
from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

MODS = ("image", "text", "points")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sh")
    manifest = make_tiny_dataset(root / "raw", n=20, modalities=MODS, val_every=5)
    write_shards(manifest, root / "shards", max_count=4, progress=False, split="train")  # 16 samples, 4 shards
    return manifest, root / "shards"


def overrides(manifest, folder, *extra):
    return ["data=shards", f"data.shards={folder}", f"data.val_manifest={manifest}", "debug=smoke",
            "modality=[image,text,points]", "data.num_workers=2", "data.batch_size=4", "data.shuffle_buffer=8",
            "trainer.tensorboard=false", "+modality.image.kwargs.drop_path=0.2",
            "+modality.points.augment.rotate=true", "+modality.image.augment.flip=0.5", *extra]


def losses(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def test_train_from_shards_with_workers(shards, tmp_path):
    manifest, folder = shards
    result = run(compose_train_config(overrides(manifest, folder, "trainer.max_steps=5")), run_dir=tmp_path / "r")
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert m["step"] == 5 and m["epoch"] == 1 and m["samples_seen"] == 20  # 4 batches per epoch
    assert "image->text" in m["retrieval"] and m["data_errors"]["skipped"] == 0


def test_resume_mid_epoch_from_shards_is_exact(shards, tmp_path):
    manifest, folder = shards
    extra = ["trainer.max_steps=7", "trainer.ckpt_every=3", "trainer.keep_last=10", "eval.enabled=false"]
    ref = run(compose_train_config(overrides(manifest, folder, *extra)), run_dir=tmp_path / "ref")
    killed = tmp_path / "killed"  # as if killed just after the step-3 checkpoint (batch 3 of epoch 0)
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(ref.run_dir / "checkpoints" / "step_000003", killed / "checkpoints" / "step_000003")
    os.symlink("step_000003", killed / "checkpoints" / "last")
    with (ref.run_dir / "metrics.csv").open() as f, (killed / "metrics.csv").open("w") as g:
        g.writelines(line for i, line in enumerate(f) if i <= 3)
    resumed = run(compose_train_config(overrides(manifest, folder, *extra, "resume=latest")), run_dir=killed)
    assert [s for s, _ in losses(resumed.run_dir)] == list(range(1, 8))
    assert [x for _, x in losses(resumed.run_dir)] == pytest.approx([x for _, x in losses(ref.run_dir)], abs=1e-6)


def test_shards_config_errors_are_clear(shards, tmp_path):
    manifest, folder = shards
    with pytest.raises(ValueError, match="data.val_manifest"):
        run(compose_train_config(["data=shards", f"data.shards={folder}", "debug=smoke", "modality=[image,text]"]),
            run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="give data.shards="):
        run(compose_train_config(["data=shards", "debug=smoke", "modality=[image,text]", "eval.enabled=false"]),
            run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="ranks x workers"):
        run(compose_train_config(overrides(manifest, folder, "data.num_workers=5", "eval.enabled=false")),
            run_dir=tmp_path / "c")


def test_manifest_run_with_augmentations_in_workers(shards, tmp_path):
    manifest, _ = shards
    cfg = compose_train_config([f"data.manifest={manifest}", "debug=smoke", "modality=[image,text,points]",
                                "data.num_workers=2", "trainer.max_steps=2", "eval.enabled=false",
                                "trainer.tensorboard=false", "+modality.points.augment.rotate=true",
                                "+modality.image.augment.crop_scale=[0.5,1.0]",
                                "+modality.image.augment.brightness=0.3", "+modality.image.augment.hue=0.05"])
    a = run(cfg, run_dir=tmp_path / "a")
    b = run(cfg, run_dir=tmp_path / "b")
    assert losses(a.run_dir) == losses(b.run_dir)  # seeded draws: the same run twice
    plain = run(compose_train_config([f"data.manifest={manifest}", "debug=smoke", "modality=[image,text,points]",
                                      "data.num_workers=2", "trainer.max_steps=2", "eval.enabled=false",
                                      "trainer.tensorboard=false"]), run_dir=tmp_path / "c")
    assert losses(plain.run_dir) != losses(a.run_dir)


def test_mixture_from_the_command_line(shards, tmp_path):
    manifest, folder = shards
    cfg = compose_train_config([
        "data=shards", f"data.val_manifest={manifest}", "debug=smoke", "modality=[image,text]", "eval.enabled=false",
        "trainer.max_steps=3", "trainer.tensorboard=false", "data.num_workers=2",
        f"data.mixture=[{{name: sh, shards: '{folder}', weight: 3}}, {{name: loose, manifest: '{manifest}', split: train}}]"])
    from anybind.train.recipe import build_run

    s = build_run(cfg)
    assert [src.name for src in s.sampler.sources] == ["sh", "loose"] and s.sampler.samples == 32
    assert s.sampler.weights.tolist() == [0.75, 0.25]
    result = run(cfg, run_dir=tmp_path / "mix")
    assert result.metrics["step"] == 3


def _corrupt_webdataset(root, raw_manifest):
    """16 samples in 4 tars written with webdataset.TarWriter: s005's PNG is not a PNG, s010's .npy is garbage, and
    the tar holding s013 ends inside s013's points member (after its json). Returns the URL pattern."""
    import io
    import tarfile

    import webdataset as wds

    rows = [json.loads(line) for line in raw_manifest.read_text().splitlines()]
    base = raw_manifest.parent
    out = root / "wds"
    out.mkdir()
    for shard in range(4):
        with wds.TarWriter(str(out / f"part-{shard}.tar"), encoder=False) as tw:
            for r in rows[shard * 4:(shard + 1) * 4]:
                sample = {"__key__": r["id"], "json": json.dumps({"id": r["id"], "label": r["label"]}).encode(),
                          "text.txt": r["text"].encode(), "image.png": (base / r["image"]).read_bytes(),
                          "points.npy": (base / r["points"]).read_bytes()}
                if r["id"] == "s005":
                    sample["image.png"] = b"\x89PNG but not really"
                if r["id"] == "s010":
                    sample["points.npy"] = b"\x93NUMPY garbage"
                tw.write(sample)
    tar = out / "part-3.tar"  # s012..s015: cut inside s013's points.npy, so s014 and s015 are lost with it
    with tarfile.open(tar) as t:
        m = t.getmember("s013.points.npy")
    tar.write_bytes(tar.read_bytes()[:m.offset_data + m.size // 2])
    with tarfile.open(fileobj=io.BytesIO(tar.read_bytes()), mode="r|") as t:  # really damaged
        with pytest.raises(tarfile.ReadError):
            for info in t:
                t.extractfile(info).read()
    return str(out / "part-{0..3}.tar")


def test_corrupt_shard_set_trains_and_reports_exactly_the_bad_samples(tmp_path, caplog):
    raw = make_tiny_dataset(tmp_path / "raw", n=16, modalities=MODS, val_every=100)
    urls = _corrupt_webdataset(tmp_path, raw)
    cfg = compose_train_config(["data=shards", f"data.urls='{urls}'", "data.epoch_samples=16", "debug=smoke",
                                "modality=[image,text,points]", "data.num_workers=2", "data.batch_size=4",
                                "data.shuffle_buffer=4", "trainer.max_steps=8", "eval.enabled=false",
                                "trainer.tensorboard=false", "trainer.ckpt_every=0"])
    with caplog.at_level("WARNING", logger="anybind.train"):
        result = run(cfg, run_dir=tmp_path / "run")
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert m["step"] == 8 and m["epoch"] == 1  # the last step of the second epoch (0-based) of 4 batches: completed
    errors = m["data_errors"]
    assert errors["ids"] == {"s005": ["image"], "s010": ["points"], "s013": ["shard"]}
    assert errors["samples"] == 3 and errors["skipped"] >= 6  # each bad sample met at least once per epoch
    by_id = {e["id"]: e for e in errors["examples"]}
    assert "s005.image.png" in by_id["s005"]["error"] and "s010.points.npy" in by_id["s010"]["error"]
    assert "part-3.tar (member s013.points.npy)" in by_id["s013"]["error"]
    summary = [r.getMessage() for r in caplog.records if "distinct samples" in r.getMessage()]
    assert len(summary) == 1 and "in 3 distinct samples: s005 (image), s010 (points), s013 (shard)" in summary[0]
    assert f"{errors['skipped']} bad inputs skipped" in summary[0]
