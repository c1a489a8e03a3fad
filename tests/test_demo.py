"""anybind-demo: world -> anchor -> bind -> evaluate at test sizes, and the pieces its report is made of."""

import json
import math
from itertools import permutations

import pytest
import torch

from anybind.demo import MODALITIES, chance_at_1, format_table, main, report, run_demo, summarize
from anybind.train.recipe import build_run, compose_train_config

QUICK = ["trainer.max_steps=2", "data.batch_size=8", "trainer.log_every=1", "trainer.progress=false",
         "trainer.csv=false", "optim.warmup_steps=1", "data.num_workers=0"]
SMALL_WORLD = dict(n_train=40, n_val=8, n_test=16, n_heldout=8, num_workers=0, progress=False)


def test_chance_counts_the_share_of_the_gallery_that_hits():
    # query "a" hits 2 of 4 gallery items, "b" 1 of 4, "z" none (left out, as in retrieval_metrics)
    assert chance_at_1(["a", "b", "z"], ["a", "a", "b", "c"]) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert math.isnan(chance_at_1(["q"], ["a"]))  # no query can hit


def test_table_marks_emergent_pairs_and_leaves_the_diagonal_empty():
    ret = {"image->text": {"R@1": 0.912, "emergent": False}, "text->image": {"R@1": 0.9, "emergent": False},
           "audio->text": {"R@1": 0.654, "emergent": True}, "text->audio": {"R@1": 0.7, "emergent": True},
           "audio->image": {"R@1": 0.95, "emergent": False}, "image->audio": {"R@1": 0.93, "emergent": False}}
    lines = format_table(ret).splitlines()
    assert lines[0].split()[-3:] == ["image", "text", "audio"]  # modality order, not dictionary order
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["image"] == ["-", "0.91", "0.93"]
    assert rows["audio"] == ["0.95", "0.65*", "-"]
    assert rows["text"] == ["0.90", "-", "0.70*"]


def test_summary_checks_every_target():
    ret = {"image->text": {"R@1": 0.95, "emergent": False}, "text->image": {"R@1": 0.91, "emergent": False},
           "audio->text": {"R@1": 0.61, "emergent": True}, "text->audio": {"R@1": 0.59, "emergent": True}}
    chance = {k: 0.01 for k in ret}
    s = summarize(ret, chance)
    assert s["trained_min_R@1"] == pytest.approx(0.91) and s["emergent_min_R@1"] == pytest.approx(0.59)
    assert s["emergent_min_x_chance"] == pytest.approx(59.0)
    assert s["met"] == {"trained_R@1": True, "emergent_R@1": False, "emergent_x_chance": True}
    s = summarize(ret, {k: 0.1 for k in ret})  # 5.9x chance: under the 10x target
    assert not s["met"]["emergent_x_chance"]


def test_bind_experiment_inflates_the_video_tower_from_the_loaded_image_tower(tmp_path):
    from anybind.data.world import generate_world

    info = generate_world(tmp_path / "world", **SMALL_WORLD)
    data = [f"data.manifest={info.manifests['train']}", f"data.val_manifest={info.manifests['val']}", *QUICK]
    from anybind.train.pipeline import run_stage

    anchor = run_stage("world_anchor", tmp_path / "anchor", data)
    s = build_run(compose_train_config(["experiment=world_bind", f"init_from={anchor.checkpoint_path}", *data]))
    image, video = s.model.encoders["image"], s.model.encoders["video"]
    assert set(s.frozen) == {"image", "text"} and [p.name for p in s.pairs] == ["image-audio", "image-video",
                                                                               "image-points"]
    torch.testing.assert_close(video.trunk.state_dict(), image.trunk.state_dict())  # inflated, then trained
    first_v, first_i = video.stem.proj[0].weight, image.stem.proj[0].weight
    torch.testing.assert_close(first_v[:, :, 0], first_i)
    assert s.model.input_contract("points")["channels"] == 6  # the world's points carry their colour


def test_demo_end_to_end_at_test_sizes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    m = run_demo(tmp_path / "world", out, anchor_overrides=QUICK, bind_overrides=QUICK, world=SMALL_WORLD)

    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["retrieval"]) == {f"{q}->{g}" for q, g in permutations(MODALITIES, 2)}
    trained = {frozenset(p) for p in saved["trained_pairs"]}
    assert trained == {frozenset(("image", m)) for m in ("text", "audio", "video", "points")}
    for name, r in saved["retrieval"].items():
        q, g = name.split("->")
        assert r["emergent"] == (frozenset((q, g)) not in trained), name
        assert 0.0 <= r["R@1"] <= 1.0 and r["n"] == 16
        assert 0.0 < saved["chance"][name] <= 1.0
    assert set(saved["heldout"]["retrieval"]) == set(saved["retrieval"])
    assert len(saved["heldout"]["combinations"]) == 38
    assert saved["summary"]["met"].keys() == {"trained_R@1", "emergent_R@1", "emergent_x_chance"}
    assert saved["timing"]["total"]["wall_s"] > 0 and {"world", "anchor", "bind", "evaluate"} <= set(saved["timing"])
    for png in ("retrieval_R@1.png", "examples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m["retrieval"] == saved["retrieval"]

    text = report(saved, out)
    assert "audio->text" not in text and "0." in text and "*" in text  # a table, not a dump
    assert f"{saved['retrieval']['audio->text']['R@1']:.2f}*" in text
    assert f"target <= {saved['targets']['wall_s']:.0f} s: met" in text  # seconds at test sizes

    # the second run reuses the world and prints the same kind of report from the command line (the command has no
    # world-size options: its generate_world gets the small world's, else it would build the 6,600-sample default)
    import anybind.data.world as world_module

    small = world_module.generate_world
    monkeypatch.setattr(world_module, "generate_world", lambda root, **kw: small(root, **{**kw, **SMALL_WORLD}))
    stamp = (tmp_path / "world" / "world.json").stat().st_mtime_ns
    main(["--world", str(tmp_path / "world"), "--out", str(tmp_path / "again"), "--no-examples",
          "--anchor", *QUICK, "--bind", *QUICK])
    printed = capsys.readouterr().out
    assert "any-to-any retrieval R@1" in printed and "held-out attribute combinations" in printed
    assert not (tmp_path / "again" / "examples.png").exists()
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["world_counts"]["train"] == SMALL_WORLD["n_train"]
    assert (tmp_path / "world" / "world.json").stat().st_mtime_ns == stamp  # reused: a regeneration rewrites it
