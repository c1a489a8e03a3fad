"""openclip_image / openclip_text / from_open_clip: parity with open_clip's own forward and preprocessing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pretrained_assets import (TINY_CLIP, build_open_clip, merged, register_custom_text_config, save_state,
                               write_photos)

import anybind
from anybind.errors import CheckpointError, RegistryError

open_clip = pytest.importorskip("open_clip")
CAPTIONS = ["a photo of a dog", "two red cubes &amp; a ball", "x" * 300]


def library_embeddings(model, name, paths, captions, resize_mode=None):
    """What a user of open_clip writes: its preprocess and tokenizer, encode_image / encode_text, normalized."""
    _, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, **merged(name, TINY_CLIP.get(name, {})),
                                                             image_resize_mode=resize_mode)
    tok = open_clip.get_tokenizer(name)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in paths])
        library_embeddings.inputs = x
        return (F.normalize(model.encode_image(x), dim=-1), F.normalize(model.encode_text(tok(captions)), dim=-1))


@pytest.mark.parametrize("name", list(TINY_CLIP))
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_embed_files_and_strings_equal_open_clip(tmp_path, name, suffix):
    ref = build_open_clip(name, TINY_CLIP[name])
    weights = save_state(ref, tmp_path / f"clip{suffix}")
    paths = write_photos(tmp_path)
    model = anybind.from_open_clip(name, pretrained=weights, model_cfg=TINY_CLIP[name])
    got = model.embed({"image": paths, "text": CAPTIONS}, batch_size=3)
    want_image, want_text = library_embeddings(ref, name, paths, CAPTIONS)
    assert got["image"].shape == (len(paths), ref.visual.output_dim if hasattr(ref.visual, "output_dim") else 32)
    assert (got["image"] - want_image).abs().max() < 2e-4
    assert (got["text"] - want_text).abs().max() < 2e-4
    with torch.no_grad():  # from tensors too
        assert (model.encoders["image"](library_embeddings.inputs) - want_image).abs().max() < 2e-4
    assert torch.equal(model.encoders["text"].logit_scale.detach(), ref.logit_scale.detach())


@pytest.mark.slow
def test_shipped_vit_s32_parity_and_checkpoint_roundtrip_without_the_source_file(tmp_path):
    ref = build_open_clip("ViT-S-32")  # a config exactly as open_clip ships it
    weights = save_state(ref, tmp_path / "vit_s32.safetensors")
    paths = write_photos(tmp_path)[:2]
    model = anybind.from_open_clip("ViT-S-32", pretrained=weights)
    want_image, want_text = library_embeddings(ref, "ViT-S-32", paths, CAPTIONS[:2])
    got = model.embed({"image": paths, "text": CAPTIONS[:2]})
    assert (got["image"] - want_image).abs().max() < 2e-4 and (got["text"] - want_text).abs().max() < 2e-4

    ckpt = anybind.save_model(tmp_path / "ckpt" / "model", model)
    meta = anybind.checkpoint.load_tensors(ckpt)[1]
    source = meta["encoders"]["image"]["source"]
    assert source["library"] == "open_clip" and source["model_name"] == "ViT-S-32"
    assert source["sha256"] == anybind.checkpoint.sha256_file(weights)
    assert source["config"]["vision_cfg"]["width"] == 384
    assert "pretrained" not in meta["encoders"]["image"]["kwargs"]
    weights.unlink()  # the reload must not need the original file
    again = anybind.load(ckpt)
    assert again.encoders["image"].weights_source["sha256"] == source["sha256"]
    assert not [n for n, p in again.named_parameters() if p.is_meta]
    rerun = again.embed({"image": paths, "text": CAPTIONS[:2]})
    assert torch.equal(rerun["image"], got["image"]) and torch.equal(rerun["text"], got["text"])


@pytest.mark.parametrize("mode", ["longest", "squash"])
def test_resize_modes_follow_open_clip_preprocess(tmp_path, mode):
    ref = build_open_clip("ViT-B-32", TINY_CLIP["ViT-B-32"])
    weights = save_state(ref, tmp_path / "clip.pt")
    paths = write_photos(tmp_path)
    enc = anybind.create_encoder("openclip_image", model_name="ViT-B-32", pretrained=weights,
                                 model_cfg=TINY_CLIP["ViT-B-32"], preprocess={"resize_mode": mode})
    model = anybind.AnyBindModel({"image": enc}, enc.embed_dim)
    want, _ = library_embeddings(ref, "ViT-B-32", paths, ["a"], resize_mode=mode)
    assert (model.embed({"image": paths})["image"] - want).abs().max() < 2e-4


def test_pretrained_tag_selects_its_preprocessing():
    enc = anybind.create_encoder("openclip_image", model_name="ViT-B-32", tag="laion2b_s34b_b79k",
                                 model_cfg=TINY_CLIP["ViT-B-32"])
    pcfg = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    assert enc.input_contract["mean"] == pytest.approx(list(pcfg["mean"]))
    with pytest.raises(RegistryError, match="no pretrained tag 'nope'.*laion2b_s34b_b79k"):
        anybind.create_encoder("openclip_image", model_name="ViT-B-32", tag="nope")
    with pytest.raises(ValueError, match="quick_gelu=True.*model_name='ViT-B-32-quickgelu'"):
        anybind.create_encoder("openclip_image", model_name="ViT-B-32", tag="openai")


@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file")
def test_torchscript_archive_is_refused_with_a_way_out(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive.*state_dict"):
        anybind.create_encoder("openclip_text", model_name="ViT-B-32", pretrained=path, model_cfg=TINY_CLIP["ViT-B-32"])


def test_custom_text_tower_config(tmp_path):
    name = register_custom_text_config(tmp_path)
    ref = open_clip.create_model(name).eval()
    assert hasattr(ref, "text")  # CustomTextCLIP: text.* keys
    weights = save_state(ref, tmp_path / "custom.safetensors")
    model = anybind.from_open_clip(name, pretrained=weights)
    assert model.encoders["text"].input_contract["context_length"] == 24
    got = model.embed({"text": CAPTIONS})["text"]
    with torch.no_grad():
        want = F.normalize(ref.encode_text(open_clip.get_tokenizer(name)(CAPTIONS)), dim=-1)
    assert (got - want).abs().max() < 2e-4


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(RegistryError, match="unknown open_clip model 'ViT-B-33'.*ViT-B-32"):
        anybind.create_encoder("openclip_image", model_name="ViT-B-33")


def test_checkpoint_of_another_architecture_names_file_tower_and_keys(tmp_path):
    other = save_state(build_open_clip("RN50", TINY_CLIP["RN50"]), tmp_path / "rn50.pt")
    with pytest.raises(CheckpointError, match=r"rn50\.pt do not fit the open_clip ViT-B-32 image tower.*missing key"):
        anybind.create_encoder("openclip_image", model_name="ViT-B-32", pretrained=other, model_cfg=TINY_CLIP["ViT-B-32"])
    wider = dict(TINY_CLIP["ViT-B-32"], text_cfg={"width": 48, "heads": 2, "layers": 1})
    wide = save_state(build_open_clip("ViT-B-32", wider), tmp_path / "wide.safetensors")
    with pytest.raises(CheckpointError, match=r"wide\.safetensors do not fit the open_clip ViT-B-32 text tower.*"
                                              r"shape mismatch.*ln_final\.bias: file \(48,\) vs model \(32,\)"):
        anybind.create_encoder("openclip_text", model_name="ViT-B-32", pretrained=wide, model_cfg=TINY_CLIP["ViT-B-32"])
    with pytest.raises(CheckpointError, match="do not exist"):
        anybind.create_encoder("openclip_text", model_name="ViT-B-32", pretrained=tmp_path / "nope.pt")


def test_models_needing_a_download_fail_clearly_and_image_towers_still_build():
    with pytest.raises(RegistryError, match="Hugging Face text tower 'roberta-base'"):
        anybind.create_encoder("openclip_text", model_name="roberta-ViT-B-32")
    with pytest.raises(RegistryError, match="Hugging Face tokenizer"):
        anybind.create_encoder("openclip_text", model_name="ViT-B-16-SigLIP", model_cfg={"vision_cfg": {"layers": 1}})
    enc = anybind.create_encoder("openclip_image", model_name="roberta-ViT-B-32",
                                 model_cfg={"vision_cfg": {"width": 64, "layers": 1}})  # no text tower is built
    assert enc.embed_dim == 512


def test_embed_dim_must_be_the_clip_dim():
    with pytest.raises(ValueError, match=r"outputs 32-d CLIP embeddings .*embed_dim=64 cannot"):
        anybind.create_encoder("openclip_image", model_name="ViT-B-32", model_cfg=TINY_CLIP["ViT-B-32"], embed_dim=64)


def test_building_from_a_file_holds_one_copy_of_the_weights(tmp_path, monkeypatch):
    import encoders.openclip as oc

    ref = build_open_clip("ViT-B-32", TINY_CLIP["ViT-B-32"])
    weights = save_state(ref, tmp_path / "clip.safetensors")
    read_ptrs = set()

    def spy(path):
        state = read_state_dict(path)
        read_ptrs.update(v.data_ptr() for v in state.values())
        return state

    read_state_dict = oc.read_state_dict
    monkeypatch.setattr(oc, "read_state_dict", spy)
    enc = anybind.create_encoder("openclip_image", model_name="ViT-B-32", pretrained=weights,
                                 model_cfg=TINY_CLIP["ViT-B-32"])
    own = {p.data_ptr() for p in enc.parameters()}
    assert own and own <= read_ptrs  # every parameter IS a tensor read from the file: no second copy was made
