"""ImageBind checkpoints load into anybind towers and reproduce ImageBind's outputs and intermediates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import anybind
from anybind.compat.imagebind import MODALITIES, imagebind_forward, load_imagebind, map_key
from anybind.errors import CheckpointError
from imagebind_fixture import FIXTURE, TINY_HEADS, load_pt

TOL = dict(rtol=1e-5, atol=1e-4)
INPUT_KEYS = ["vision", "video", "text", "audio", "depth", "thermal", "imu"]
TOWER_KEYS = ["vision", "text", "audio", "depth", "thermal", "imu"]


@pytest.fixture(scope="module")
def inputs(fixture_dir):
    return load_pt(fixture_dir, "inputs.pt")


@pytest.mark.parametrize("key", INPUT_KEYS)
def test_forward_imagebind_reproduces_expected_outputs(tiny_model, inputs, fixture_dir, key):
    expected = load_pt(fixture_dir, "expected.pt")[key]
    model_key = "vision" if key == "video" else key
    with torch.no_grad():
        out = tiny_model.forward_imagebind({model_key: inputs[key]})
    assert list(out) == [model_key]
    torch.testing.assert_close(out[model_key], expected, **TOL)


def test_expected_keys_are_all_covered(fixture_dir):
    assert sorted(load_pt(fixture_dir, "expected.pt")) == sorted(INPUT_KEYS)
    assert sorted(load_pt(fixture_dir, "intermediates.pt")) == sorted(TOWER_KEYS)


def test_forward_imagebind_runs_several_modalities_at_once(tiny_model, inputs, fixture_dir):
    expected = load_pt(fixture_dir, "expected.pt")
    with torch.no_grad():
        out = tiny_model.forward_imagebind({k: inputs[k] for k in ("vision", "text", "imu")})
    assert set(out) == {"vision", "text", "imu"}
    for k in out:
        torch.testing.assert_close(out[k], expected[k], **TOL)


@pytest.mark.parametrize("key", TOWER_KEYS)
def test_intermediates_match_stage_by_stage(tiny_model, inputs, fixture_dir, key):
    ref = load_pt(fixture_dir, "intermediates.pt")[key]
    tower = tiny_model.encoders[MODALITIES[key]]
    x = inputs[key]
    if x.ndim >= 5:  # audio clips: rows are b * S + s
        x = x.flatten(0, 1)
    with torch.no_grad():
        tokens = tower.stem.tokens(x)
        trunk_out = tower.trunk(tower.stem(x))
        head_out = tower.head(trunk_out, x)
    torch.testing.assert_close(tokens, ref["tokens"], **TOL)
    if key == "text":  # the stem drops the positions after the last end-of-text token: the causal trunk's
        # outputs up to there are ImageBind's own
        length = int(x.argmax(dim=-1).max()) + 1
        assert trunk_out.shape[1] == length <= ref["trunk_out"].shape[1]
        torch.testing.assert_close(trunk_out, ref["trunk_out"][:, :length], **TOL)
    else:
        torch.testing.assert_close(trunk_out, ref["trunk_out"], **TOL)
    torch.testing.assert_close(head_out, ref["head_out"], **TOL)


def test_a_short_caption_alone_runs_only_up_to_its_end_of_text_and_matches_imagebind(tiny_model, inputs, fixture_dir):
    ref = load_pt(fixture_dir, "intermediates.pt")["text"]
    tower = tiny_model.encoders["text"]
    short = inputs["text"][:1]  # the fixture's first caption: end-of-text at position 20 of 77
    eot = int(short.argmax(dim=-1))
    assert eot < short.shape[1] - 1
    with torch.no_grad():
        stem_out = tower.stem(short)
        head_out = tower.head(tower.trunk(stem_out), short)
    assert stem_out.shape[1] == eot + 1
    torch.testing.assert_close(head_out, ref["head_out"][:1], **TOL)


def test_text_trimmed_after_end_of_text_equals_the_full_77_positions(tiny_model):
    tower = tiny_model.encoders["text"]
    g = torch.Generator().manual_seed(3)
    ids = torch.zeros(3, 77, dtype=torch.long)
    for row, eot in enumerate((4, 9, 13)):
        ids[row, 0], ids[row, 1:eot] = 49406, torch.randint(1, 49406, (eot - 1,), generator=g)
        ids[row, eot] = 49407
    with torch.no_grad():
        trimmed = tower(ids)
        assert tower.stem(ids).shape[1] == 14
        tower.stem.trim_after_eot = False
        try:
            assert tower.stem(ids).shape[1] == 77
            full = tower(ids)
        finally:
            tower.stem.trim_after_eot = True
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)


def test_logit_scales_come_from_the_checkpoint(tiny_model, fixture_dir):
    weights = load_pt(fixture_dir, "weights.pt")
    for key in ("text", "audio", "depth", "thermal", "imu"):
        stored = weights[f"modality_postprocessors.{key}.1.log_logit_scale"]
        assert torch.equal(tiny_model.encoders[MODALITIES[key]].log_logit_scale, stored)
    assert tiny_model.encoders["image"].log_logit_scale is None


def test_model_forward_and_embed_return_unit_vectors_of_imagebind_outputs(tiny_model, inputs, fixture_dir):
    expected = load_pt(fixture_dir, "expected.pt")
    with torch.no_grad():
        out = tiny_model({"text": inputs["text"], "audio": inputs["audio"], "video": inputs["video"]})
    for k, ref in (("text", "text"), ("audio", "audio"), ("video", "video")):
        torch.testing.assert_close(out[k].norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(out[k], F.normalize(expected[ref], dim=-1), **TOL)
    # depth/thermal/imu take preprocessed tensors: embed is the unit-normalized ImageBind output
    emb = tiny_model.embed({"imu": list(inputs["imu"]), "depth": list(inputs["depth"])})
    assert list(emb) == ["imu", "depth"]
    torch.testing.assert_close(emb["depth"], F.normalize(expected["depth"], dim=-1), **TOL)
    torch.testing.assert_close(emb["imu"], F.normalize(expected["imu"], dim=-1), **TOL)
    with pytest.raises(anybind.InputError, match=r"depth.*\(1, 224, 224\)"):
        tiny_model.embed({"depth": [inputs["depth"][0, :, :100]]})


def test_video_tower_shares_the_vision_weights(tiny_model):
    image, video = tiny_model.encoders["image"], tiny_model.encoders["video"]
    assert video.stem is image.stem and video.trunk is image.trunk and video.head is image.head
    assert video.input_contract["clips"] == 5 and video.input_contract["frames"] == 2
    n_params = sum(p.numel() for p in tiny_model.parameters())  # shared tensors are counted once
    assert n_params == sum(sum(p.numel() for p in e.parameters()) for m, e in tiny_model.encoders.items() if m != "video")


def test_parameter_counts_match_the_reference(tiny_model):
    counts = {"vision": 194048, "text": 1610017, "audio": 81792, "depth": 41216, "thermal": 39400, "imu": 22608}
    for key, n in counts.items():
        tower = tiny_model.encoders[MODALITIES[key]]
        # ImageBind's text logit scale is a parameter; anybind keeps every logit scale as a buffer
        assert sum(p.numel() for p in tower.parameters()) + (key == "text") == n, key


def test_state_dict_tensors_are_used_in_place(fixture_dir):
    weights = load_pt(fixture_dir, "weights.pt")
    model = load_imagebind(weights, num_heads=TINY_HEADS, video=False)
    qkv = model.encoders["image"].trunk.blocks[0].attn.qkv.weight
    assert qkv.data_ptr() == weights["modality_trunks.vision.blocks.0.attn.in_proj_weight"].data_ptr()
    assert not any(t.is_meta for t in model.state_dict().values())
    assert "video" not in model.encoders


def test_memory_mapped_load_matches_a_plain_load(tiny_model, fixture_dir, inputs):
    plain = load_imagebind(fixture_dir / "weights.pt", num_heads=TINY_HEADS, mmap=False)
    with torch.no_grad():
        a = plain.forward_imagebind({"audio": inputs["audio"]})["audio"]
        b = tiny_model.forward_imagebind({"audio": inputs["audio"]})["audio"]
    assert torch.equal(a, b)


def test_towers_rebuild_from_the_registry_with_inferred_sizes(tiny_model):
    text = tiny_model.encoders["text"]
    assert text.registry_name == "imagebind_text"
    assert text.build_kwargs["width"] == 32 and text.build_kwargs["depth"] == 2 and text.build_kwargs["num_heads"] == 4
    audio = tiny_model.encoders["audio"]
    assert audio.build_kwargs["width"] == 48 and audio.build_kwargs["kernel_size"] == 16
    rebuilt = anybind.create_encoder("imagebind_audio", **audio.build_kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in audio.state_dict().items()}


def test_head_counts_that_do_not_divide_the_width_are_refused(fixture_dir):
    with pytest.raises(CheckpointError, match="num_heads"):
        load_imagebind(fixture_dir / "weights.pt")  # huge defaults: thermal width 40 is not divisible by 12 heads
    with pytest.raises(ValueError, match="unknown ImageBind modalities"):
        load_imagebind(fixture_dir / "weights.pt", num_heads={"points": 2})


def test_damaged_checkpoints_are_refused_with_the_key(fixture_dir, tmp_path):
    weights = load_pt(fixture_dir, "weights.pt")
    extra = dict(weights, **{"modality_trunks.vision.blocks.0.attn.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="attn.extra"):
        load_imagebind(extra, num_heads=TINY_HEADS)
    missing = {k: v for k, v in weights.items() if k != "modality_trunks.audio.blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match="fc2.bias"):
        load_imagebind(missing, num_heads=TINY_HEADS)
    bad_mask = dict(weights, **{"modality_preprocessors.text.mask": torch.zeros(77, 77)})
    with pytest.raises(CheckpointError, match="causal"):
        load_imagebind(bad_mask, num_heads=TINY_HEADS)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_imagebind(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_imagebind(tmp_path / "junk.pth")


def test_a_checkpoint_with_some_modalities_loads_those(fixture_dir, inputs):
    weights = load_pt(fixture_dir, "weights.pt")
    subset = {k: v for k, v in weights.items() if ".text." in k or ".imu." in k}
    model = load_imagebind(subset, num_heads=TINY_HEADS)
    assert sorted(model.encoders) == ["imu", "text"]
    with pytest.raises(KeyError, match="no ImageBind tower for input 'vision'"):
        model.forward_imagebind({"vision": inputs["vision"]})


def test_key_mapping_covers_every_tower_stage():
    assert map_key("modality_trunks.audio.blocks.3.attn.in_proj_weight") == ("audio", "trunk.blocks.3.attn.qkv.weight")
    assert map_key("modality_heads.imu.3.weight") == ("imu", "head.proj.weight")
    assert map_key("modality_heads.text.proj.0.bias") == ("text", "head.norm.bias")
    assert map_key("modality_trunks.vision.pre_transformer_layer.0.weight") == ("vision", "stem.norm_pre.weight")
    assert map_key("modality_preprocessors.depth.depth_stem.norm_layer.bias") == ("depth", "stem.norm.bias")


def test_multi_clip_rule_follows_input_rank(tiny_model, inputs):
    """ImageBind treats a 5-D vision input as (B, S, 3, H, W) images and averages their scaled outputs."""
    images = inputs["vision"]
    with torch.no_grad():
        both = imagebind_forward(tiny_model.encoders["image"], images.unsqueeze(0))
        each = tiny_model.forward_imagebind({"vision": images})["vision"]
    torch.testing.assert_close(both[0], each.mean(dim=0), **TOL)
    assert FIXTURE.name == "imagebind_tiny"


def test_export_to_imagebind_keys_round_trips_exactly(tiny_model, fixture_dir):
    from anybind.compat.imagebind import to_imagebind_state_dict

    weights = load_pt(fixture_dir, "weights.pt")
    exported = to_imagebind_state_dict(tiny_model.encoders)
    assert set(exported) == set(weights)
    for key, value in weights.items():
        assert torch.equal(exported[key], value), key
