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
                                "+modality.image.augment.crop_scale=[0.5,1.0]"])
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
