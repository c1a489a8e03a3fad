"""conf/experiment/imagebind_bind_points.yaml: a points tower trained into a converted ImageBind checkpoint's space
(vision and text frozen), run end to end on the tiny fixture and a tiny generated points + image manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import anybind
from anybind.compat.convert import convert_imagebind
from imagebind_fixture import TINY_HEADS

SHAPES = [("red", (220, 30, 30)), ("green", (30, 200, 60)), ("blue", (40, 60, 220)), ("yellow", (230, 220, 40))]


def make_manifest(root, n: int = 12):
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "image").mkdir(parents=True)
    (root / "points").mkdir()
    rows = []
    for i in range(n):
        name, rgb = SHAPES[i % len(SHAPES)]
        img = np.clip(np.array(rgb, np.float32) + rng.normal(0, 10, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "image" / f"{i}.png")
        pts = rng.normal(size=(80, 3)) * (1 + i % len(SHAPES))
        np.save(root / "points" / f"{i}.npy", pts.astype(np.float32))
        rows.append({"id": f"s{i}", "label": name, "image": f"image/{i}.png", "points": f"points/{i}.npy",
                     "text": f"a {name} object", "split": "val" if i % 4 == 3 else "train"})
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _override(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def kwargs_override(modality: str, kwargs: dict) -> str:
    return f"++modality.{modality}.kwargs={{{','.join(f'{k}:{_override(v)}' for k, v in kwargs.items())}}}"


def test_points_bind_into_a_frozen_imagebind_space(fixture_dir, tmp_path):
    recipe = pytest.importorskip("anybind.train.recipe")
    ckpt = convert_imagebind(fixture_dir / "weights.pt", tmp_path / "imagebind_tiny", num_heads=TINY_HEADS,
                             modalities=["image", "text"])
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    manifest = make_manifest(tmp_path / "data")
    overrides = ["experiment=imagebind_bind_points", "debug=smoke", f"init_from={ckpt}", f"data.manifest={manifest}",
                 f"embed_dim={meta['embed_dim']}", "trainer.max_steps=3",
                 kwargs_override("image", meta["encoders"]["image"]["kwargs"]),
                 kwargs_override("text", meta["encoders"]["text"]["kwargs"])]
    cfg = recipe.compose_train_config(overrides)
    assert cfg.modality.image.encoder == "imagebind_vision" and list(cfg.freeze) == ["image", "text"]
    result = recipe.run(cfg, run_dir=tmp_path / "run")

    before, after = load_file(str(ckpt)), load_file(str(result.checkpoint_path))
    for key, value in before.items():  # the ImageBind towers are exactly the converted ones
        assert torch.equal(after[key], value), key
    fresh = anybind.create_model({"points": "points_transformer_test"}, embed_dim=meta["embed_dim"])
    trained_points = {k: v for k, v in after.items() if k.startswith("encoders.points.")}
    assert trained_points and set(trained_points) == set(fresh.state_dict())
    assert result.metrics["step"] == 3

    model = anybind.load(result.checkpoint_path)
    assert sorted(model.modalities) == ["image", "points", "text"]
    assert model.input_contract("image")["compat"] == "imagebind"
    reference = anybind.load(ckpt)
    items = {"image": [manifest.parent / "image" / "0.png"], "text": ["a red object"]}
    z, z_ref = model.embed(items), reference.embed(items)
    for m in items:
        assert torch.equal(z[m], z_ref[m])
    points = model.embed({"points": [manifest.parent / "points" / "0.npy"]})["points"]
    assert points.shape == (1, meta["embed_dim"]) and torch.isfinite(points).all()

    ret = result.metrics["retrieval"]
    assert ret["points->image"]["emergent"] is False
    assert ret["points->text"]["emergent"] is True  # text never trained with points
