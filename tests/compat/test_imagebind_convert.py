"""``anybind-convert imagebind IN OUT``: the converted checkpoint rebuilds through the registry and embeds like
ImageBind (raw files through the pinned ImageBind preprocessing included)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import anybind
from anybind.compat.convert import main
from imagebind_fixture import TINY_HEADS, load_pt

TOL = dict(rtol=1e-5, atol=1e-4)
HEAD_ARGS = ["--num-heads", *[f"{k}={v}" for k, v in TINY_HEADS.items()]]


@pytest.fixture(scope="module")
def converted(fixture_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "imagebind_tiny"
    assert main(["imagebind", str(fixture_dir / "weights.pt"), str(out), *HEAD_ARGS]) == 0
    return out


def test_converted_checkpoint_reproduces_every_modality(converted, fixture_dir):
    model = anybind.load(converted)
    assert type(model) is anybind.AnyBindModel
    assert sorted(model.encoders) == ["audio", "depth", "image", "imu", "text", "thermal"]
    inputs, expected = load_pt(fixture_dir, "inputs.pt"), load_pt(fixture_dir, "expected.pt")
    with torch.no_grad():
        for key in ("vision", "text", "audio", "depth", "thermal", "imu"):
            m = "image" if key == "vision" else key
            z = model({m: inputs[key]})[m]
            torch.testing.assert_close(z, F.normalize(expected[key], dim=-1), **TOL)


def test_converted_checkpoint_embeds_raw_files_like_the_compat_model(converted, fixture_dir, tiny_model, captions):
    model = anybind.load(converted)
    items = {"text": captions, "image": [fixture_dir / "raw_image.png"], "audio": [fixture_dir / "raw_audio.wav"]}
    ours = model.embed(items)
    ref = tiny_model.embed(items)
    raw = load_pt(fixture_dir, "expected_raw_embeddings.pt")
    for m, key in (("text", "text"), ("image", "vision"), ("audio", "audio")):
        assert torch.equal(ours[m], ref[m])
        torch.testing.assert_close(ours[m], F.normalize(raw[key], dim=-1), **TOL)


def test_sidecar_names_registry_towers_and_imagebind_contracts(converted):
    meta = json.loads(converted.with_suffix(".json").read_text())
    assert meta["embed_dim"] == 32
    assert meta["config"]["source"] == "imagebind" and meta["config"]["num_heads"] == TINY_HEADS
    enc = meta["encoders"]
    assert enc["image"]["name"] == "imagebind_vision" and enc["image"]["kwargs"]["num_heads"] == 4
    assert enc["audio"]["input_contract"]["compat"] == "imagebind"
    assert enc["audio"]["input_contract"]["clips"] == 3
    assert enc["text"]["kwargs"]["context_length"] == 77


def test_logit_scales_survive_conversion(converted, fixture_dir):
    model = anybind.load(converted, modalities=["text", "imu"])
    assert sorted(model.encoders) == ["imu", "text"]
    weights = load_pt(fixture_dir, "weights.pt")
    assert torch.equal(model.encoders["imu"].log_logit_scale, weights["modality_postprocessors.imu.1.log_logit_scale"])
    from anybind.compat.imagebind import imagebind_forward

    inputs, expected = load_pt(fixture_dir, "inputs.pt"), load_pt(fixture_dir, "expected.pt")
    with torch.no_grad():
        torch.testing.assert_close(imagebind_forward(model.encoders["text"], inputs["text"]), expected["text"], **TOL)


def test_video_tower_and_modality_selection(fixture_dir, tmp_path):
    out = tmp_path / "ib"
    main(["imagebind", str(fixture_dir / "weights.pt"), str(out), *HEAD_ARGS, "--video", "--modalities", "image",
          "video"])
    model = anybind.load(out)
    assert sorted(model.encoders) == ["image", "video"]
    inputs, expected = load_pt(fixture_dir, "inputs.pt"), load_pt(fixture_dir, "expected.pt")
    with torch.no_grad():
        z = model({"video": inputs["video"]})["video"]
    torch.testing.assert_close(z, F.normalize(expected["video"], dim=-1), **TOL)


def test_bad_arguments_fail_loudly(fixture_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["imagebind", str(fixture_dir / "weights.pt"), str(tmp_path / "x"), "--num-heads", "vison=4"])
    assert err.value.code == 2 and "vison=4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["imagebind", str(fixture_dir / "weights.pt"), str(tmp_path / "x"), *HEAD_ARGS, "--modalities", "points"])
    assert "no tower for ['points']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["imagebind", str(tmp_path / "missing.pth"), str(tmp_path / "x")])
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
