"""timm_image: parity with timm's pre-logits and its eval transform; tags, projections, bad files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pretrained_assets import save_state, write_photos

import anybind
from anybind.errors import CheckpointError, RegistryError

timm = pytest.importorskip("timm")
ARCHS = ["vit_tiny_patch16_224.augreg_in21k", "resnet18.tv_in1k", "convnext_atto.d2_in1k"]


def timm_reference(name, paths):
    """What a timm user writes: create_transform(resolve_data_config) and pre-logits, normalized."""
    model = timm.create_model(name, pretrained=False).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        return model, x, F.normalize(model.forward_head(model.forward_features(x), pre_logits=True), dim=-1)


@pytest.mark.parametrize("name", ARCHS)
def test_embed_files_equal_timm_pre_logits(tmp_path, name):
    paths = write_photos(tmp_path)[:2]
    model, x, want = timm_reference(name, paths)
    weights = save_state(model, tmp_path / ("w.safetensors" if "vit" in name else "w.pth"))  # classifier included
    enc = anybind.create_encoder("timm_image", model_name=name, pretrained=weights)
    assert enc.embed_dim == model.num_features and enc.proj is None
    ab = anybind.AnyBindModel({"image": enc}, enc.embed_dim)
    got = ab.embed({"image": paths})["image"]
    assert (got - want).abs().max() < 2e-4
    with torch.no_grad():
        assert (enc.eval()(x) - want).abs().max() < 2e-4  # from tensors as well


def test_tag_sets_the_contract_and_embed_dim_adds_a_projection():
    enc = anybind.create_encoder("timm_image", model_name="resnet18.tv_in1k", embed_dim=64)
    c = enc.input_contract
    assert (c["interpolation"], c["resize_size"], c["image_size"]) == ("bilinear", 256, 224)
    assert c["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert enc.embed_dim == 64 and enc.proj.weight.shape == (64, 512)
    assert enc(torch.rand(2, 3, 224, 224)).shape == (2, 64)
    vit = anybind.create_encoder("timm_image", model_name="vit_tiny_patch16_224.augreg_in21k")
    assert vit.input_contract["mean"] == [0.5, 0.5, 0.5] and vit.input_contract["resize_size"] == 248  # crop_pct 0.9


def test_checkpoint_roundtrip_rebuilds_without_the_file(tmp_path):
    model = timm.create_model("resnet18", pretrained=False).eval()
    weights = save_state(model, tmp_path / "r18.pt")
    enc = anybind.create_encoder("timm_image", model_name="resnet18", pretrained=weights, embed_dim=32)
    ab = anybind.AnyBindModel({"image": enc}, 32)
    ckpt = anybind.save_model(tmp_path / "ckpt", ab)
    weights.unlink()
    again = anybind.load(ckpt)
    src = again.checkpoint_meta["encoders"]["image"]["source"]
    assert src["library"] == "timm" and src["model_name"] == "resnet18" and len(src["sha256"]) == 64
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(again.encoders["image"](x), ab.encoders["image"].eval()(x))


def test_bad_names_and_files():
    with pytest.raises(RegistryError, match="unknown timm model 'resnet19'; did you mean.*resnet18"):
        anybind.create_encoder("timm_image", model_name="resnet19")
    with pytest.raises(RegistryError, match="no pretrained tag 'nope'.*tv_in1k"):
        anybind.create_encoder("timm_image", model_name="resnet18.nope")


def test_file_of_another_architecture_is_named(tmp_path):
    weights = save_state(timm.create_model("resnet18", pretrained=False), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match=r"r18\.pt do not fit the timm resnet34 backbone.*missing key"):
        anybind.create_encoder("timm_image", model_name="resnet34", pretrained=weights)
