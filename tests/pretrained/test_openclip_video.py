"""openclip_video: a video tower that starts as the OpenCLIP image tower (frame-mean pooling)."""

from __future__ import annotations

import pytest
import torch
from pretrained_assets import TINY_CLIP, build_open_clip, save_state

import anybind
from anybind.data.transforms.video import video_transform

pytest.importorskip("open_clip")
NAME = "ViT-B-32"
CFG = TINY_CLIP[NAME]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_state(build_open_clip(NAME, CFG), tmp_path_factory.mktemp("clip") / "clip.safetensors")


def _model(weights, **video):
    return anybind.create_model({
        "image": {"name": "openclip_image", "model_name": NAME, "model_cfg": CFG, "pretrained": str(weights)},
        "video": {"name": "openclip_video", "model_name": NAME, "model_cfg": CFG, "pretrained": str(weights), **video},
    }).eval()


def test_a_still_video_embeds_like_its_frame_and_motion_changes_it(weights):
    model = _model(weights, frames=4, clips=2)
    contract = model.encoders["video"].input_contract
    assert contract["frames"] == 4 and contract["clips"] == 2
    assert contract["image_size"] == model.encoders["image"].input_contract["image_size"] == 64
    assert contract["mean"] == model.encoders["image"].input_contract["mean"]
    image = torch.randn(3, 3, 64, 64)
    still = image[:, None, :, None].expand(3, 2, 3, 4, 64, 64)  # (N, clips, 3, T, S, S), every frame the image
    with torch.no_grad():
        want = model.encoders["image"](image)
        got = model.encoders["video"](still)
        moving = still.clone()
        moving[:, :, :, 1:] = torch.randn(3, 2, 3, 3, 64, 64)
        other = model.encoders["video"](moving)
    assert got.shape == want.shape == (3, 32)
    assert (got - want).abs().max() < 1e-5
    assert (other - want).abs().max() > 1e-2
    # the copy is its own: training video leaves the image anchor as it was
    assert model.encoders["video"].visual is not model.encoders["image"].visual
    assert torch.equal(model.encoders["video"].visual.conv1.weight, model.encoders["image"].visual.conv1.weight)


def test_transform_feeds_it_and_a_checkpoint_rebuilds_without_the_file(weights, tmp_path):
    model = _model(weights, frames=2, clips=1)
    frames = torch.randint(0, 255, (30, 3, 80, 96), dtype=torch.uint8)
    x = video_transform(model.encoders["video"].input_contract)(frames)
    assert x.shape == (1, 3, 2, 64, 64)
    with torch.no_grad():
        before = model.encoders["video"](x[None])
    path = anybind.save_model(tmp_path / "m" / "model", model)
    weights.rename(weights.with_suffix(".gone"))  # the source file is not needed to load
    try:
        loaded = anybind.load(path)
        with torch.no_grad():
            assert torch.equal(loaded.encoders["video"](x[None]), before)
        assert loaded.checkpoint_meta["encoders"]["video"]["source"]["library"] == "open_clip"
    finally:
        weights.with_suffix(".gone").rename(weights)


def test_wrong_input_shape_is_a_clear_error(weights):
    enc = _model(weights, frames=2, clips=1).encoders["video"]
    with pytest.raises(ValueError, match=r"openclip_video expects \(N, clips, 3, T, S, S\) with T=2"):
        enc(torch.zeros(1, 3, 2, 64, 64))
