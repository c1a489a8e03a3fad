"""experiment=openclip_bind: composes, and binds audio to a frozen (tiny, random) OpenCLIP model saved as a file."""

import pytest
import torch
from omegaconf import OmegaConf

import anybind
from anybind.train.recipe import compose_train_config, run

from tinydata import make_tiny_dataset

open_clip = pytest.importorskip("open_clip")
TEXT = {"width": 32, "heads": 2, "layers": 1}
TINY = {"embed_dim": 32, "vision_cfg": {"width": 64, "layers": 1, "image_size": 32, "patch_size": 16}, "text_cfg": TEXT}


def test_experiment_composes_with_a_frozen_openclip_anchor():
    cfg = compose_train_config(["experiment=openclip_bind", "data.manifest=m.jsonl",
                                "modality.image.kwargs.pretrained=/models/vit_b32.safetensors",
                                "modality.image.kwargs.model_name=ViT-B-16"])
    assert cfg.modality.image.encoder == "openclip_image" and cfg.modality.text.encoder == "openclip_text"
    assert cfg.modality.image.tune.mode == "frozen" and cfg.modality.text.tune.mode == "frozen"
    text = OmegaConf.to_container(cfg.modality.text.kwargs, resolve=True)
    assert text == {"model_name": "ViT-B-16", "pretrained": "/models/vit_b32.safetensors"}  # text follows image
    assert sorted(cfg.modality) == ["audio", "image", "points", "text", "video"] and cfg.embed_dim == 512
    with pytest.raises(Exception, match="pretrained"):  # the checkpoint is mandatory
        OmegaConf.to_container(compose_train_config(["experiment=openclip_bind"]).modality, throw_on_missing=True)


def test_binding_audio_to_a_frozen_openclip_file_keeps_it_bit_identical(tmp_path):
    ref = open_clip.create_model("ViT-B-32", **{k: {**open_clip.get_model_config("ViT-B-32")[k], **v}
                                               if isinstance(v, dict) else v for k, v in TINY.items()})
    weights = tmp_path / "tiny_clip.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    manifest = make_tiny_dataset(tmp_path / "data", n=12, modalities=("image", "text", "audio"), val_every=4)
    cfg = compose_train_config(["experiment=openclip_bind", "debug=smoke", f"data.manifest={manifest}",
                                "modality=[image,text,audio]", "embed_dim=32", "trainer.max_steps=2",
                                "trainer.ckpt_every=0", "trainer.tensorboard=false",
                                f"modality.image.kwargs.pretrained={weights}"])
    for m in ("image", "text"):
        cfg.modality[m].kwargs.model_cfg = TINY
    result = run(cfg, run_dir=tmp_path / "run")
    model = anybind.load(result.checkpoint_path)  # rebuilt without reading tiny_clip.safetensors
    visual = {k: v for k, v in ref.state_dict().items() if k.startswith("visual.")}
    for k, v in visual.items():
        assert torch.equal(model.encoders["image"].visual.state_dict()[k[len("visual."):]], v), k
    assert torch.equal(model.encoders["text"].clip.token_embedding.weight, ref.token_embedding.weight)
    assert model.checkpoint_meta["encoders"]["image"]["source"]["file"] == "tiny_clip.safetensors"
    assert "audio->text" in result.metrics["retrieval"] and result.metrics["retrieval"]["audio->text"]["emergent"]


def test_video_starts_as_the_openclip_image_tower_and_trains_its_last_blocks(tmp_path):
    ref = open_clip.create_model("ViT-B-32", **{k: {**open_clip.get_model_config("ViT-B-32")[k], **v}
                                               if isinstance(v, dict) else v for k, v in TINY.items()})
    weights = tmp_path / "tiny_clip.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    manifest = make_tiny_dataset(tmp_path / "data", n=8, modalities=("image", "video"), val_every=4)
    cfg = compose_train_config(["experiment=openclip_bind", "debug=smoke", f"data.manifest={manifest}",
                                "modality=[image,text,openclip_video]", "embed_dim=32", "trainer.max_steps=2",
                                "trainer.ckpt_every=0", "trainer.tensorboard=false", "modality.video.tune.last_n=1",
                                f"modality.image.kwargs.pretrained={weights}"])
    assert cfg.modality.video.encoder == "openclip_video"
    for m in ("image", "text", "video"):
        cfg.modality[m].kwargs.model_cfg = TINY
    result = run(cfg, run_dir=tmp_path / "run")
    model = anybind.load(result.checkpoint_path)
    video, image = model.encoders["video"].visual.state_dict(), model.encoders["image"].visual.state_dict()
    assert torch.equal(video["conv1.weight"], image["conv1.weight"])  # the stem stays as the image tower's
    assert torch.equal(image["conv1.weight"], ref.visual.conv1.weight)
    last = [k for k in video if k.startswith("transformer.resblocks.0.") and k.endswith("weight")]
    assert last and any(not torch.equal(video[k], image[k]) for k in last)  # the last block trained
