"""anybind's transform from a library contract == the library's own eval transform, on decoded image files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from pretrained_assets import write_photos

from anybind.data.library_transforms import LibraryImageTransform, OpenClipTokenizerTransform, resized_size
from anybind.data.readers import read_image
from anybind.errors import InputError
from anybind.modality import get_modality

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")


@pytest.mark.parametrize("size,mode,interp", [(64, "shortest", "bicubic"), ((48, 80), "shortest", "bilinear"),
                                              (64, "longest", "bicubic"), ((40, 56), "squash", "bilinear")])
def test_open_clip_eval_transform_is_reproduced_exactly(tmp_path, size, mode, interp):
    from open_clip.transform import image_transform

    theirs = image_transform(size, is_train=False, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), resize_mode=mode,
                             interpolation=interp)
    from encoders.openclip import image_contract

    contract = image_contract({"size": size, "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1), "resize_mode": mode,
                               "interpolation": interp, "fill_color": 0})
    ours = get_modality("image").make_transform(contract)
    assert isinstance(ours, LibraryImageTransform)
    for path in write_photos(tmp_path):
        assert torch.equal(ours(read_image(path)), theirs(Image.open(path)))


@pytest.mark.parametrize("name", ["resnet18.tv_in1k", "vit_tiny_patch16_224.augreg_in21k", "convnext_atto.d2_in1k"])
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_timm_eval_transform_is_reproduced_exactly(tmp_path, name, crop_mode):
    import anybind

    enc = anybind.create_encoder("timm_image", model_name=name)
    cfg = timm.data.resolve_model_data_config(enc.trunk)
    cfg["crop_mode"] = crop_mode
    from encoders.timm_image import timm_contract

    ours = get_modality("image").make_transform(timm_contract(cfg))
    theirs = timm.data.create_transform(**cfg)
    for path in write_photos(tmp_path):
        assert torch.equal(ours(read_image(path)), theirs(Image.open(path).convert("RGB")))


def test_tensors_follow_the_pil_path_closely(tmp_path):
    t = LibraryImageTransform(64, 72, "shortest", interpolation="bilinear")
    img = read_image(write_photos(tmp_path)[3])
    from torchvision.transforms.v2.functional import pil_to_tensor

    u8 = pil_to_tensor(img)
    assert (t(u8) - t(img)).abs().max() < 0.05
    assert torch.allclose(t(u8), t(u8.float() / 255), atol=1e-2)  # uint8 resizes round to whole levels
    assert resized_size(61, 97, (64, 64), "shortest") == [64, 101]
    with pytest.raises(InputError, match="one \\(3, H, W\\) image tensor"):
        t(torch.zeros(2, 3, 8, 8), "x.png")
    with pytest.raises(ValueError, match="resize_mode"):
        LibraryImageTransform(64, resize_mode="crop")


def test_open_clip_tokenizer_transform_matches_open_clip():
    t = OpenClipTokenizerTransform("ViT-B-32", context_length=16)
    text = "a photo of a cat " * 10
    assert torch.equal(t(text), open_clip.get_tokenizer("ViT-B-32", context_length=16)([text])[0])
    assert torch.equal(t(t(text)), t(text))  # ids pass through
    with pytest.raises(InputError, match="empty text"):
        t("  ", "caption.txt")
