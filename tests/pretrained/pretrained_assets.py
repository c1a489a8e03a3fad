"""Tiny random-weight models built by open_clip and timm themselves, saved as a user's local weights file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TEXT = {"width": 32, "heads": 2, "layers": 1}
# Shipped open_clip configs shrunk through open_clip's own model_cfg overrides: one per image-tower family.
TINY_CLIP = {
    "ViT-B-32": {"embed_dim": 32, "vision_cfg": {"width": 64, "layers": 2, "image_size": 64, "patch_size": 16},
                 "text_cfg": TEXT},
    "RN50": {"embed_dim": 32, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64}, "text_cfg": TEXT},
    "convnext_tiny": {"embed_dim": 32, "vision_cfg": {"timm_model_name": "convnext_atto", "image_size": 64},
                      "text_cfg": TEXT},
}
CUSTOM_TEXT_NAME = "anybind-test-custom-text"


def merged(name: str, over: dict) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(name)
    return {k: ({**cfg.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in over.items()}


def build_open_clip(name: str, over: dict | None = None):
    """open_clip's own model (random weights, eval mode)."""
    import open_clip

    return open_clip.create_model(name, pretrained=None, **merged(name, over or {})).eval()


def register_custom_text_config(tmp: Path) -> str:
    """A user's own open_clip config with a custom (``text.*``) text tower, added through open_clip's API."""
    import open_clip

    cfg = {"embed_dim": 32, "custom_text": True,
           "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp / f"{CUSTOM_TEXT_NAME}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return CUSTOM_TEXT_NAME


def save_state(model: torch.nn.Module, path: Path) -> Path:
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def write_photos(root: Path) -> list[Path]:
    """Photo-like files (smooth gradients, shapes, noise) of odd sizes: JPEG, PNG and a grayscale PNG."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = []
    for i, (w, h, ext, mode) in enumerate([(97, 61, "jpg", "RGB"), (40, 75, "png", "RGB"), (64, 64, "png", "L"),
                                           (300, 180, "jpg", "RGB")]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], -1)
        img = Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
        ImageDraw.Draw(img).ellipse([w // 5, h // 4, w // 2, h // 2 + 5], fill=(200, 30, 90))
        path = root / f"photo{i}.{ext}"
        img.convert(mode).save(path, quality=90) if ext == "jpg" else img.convert(mode).save(path)
        out.append(path)
    return out
