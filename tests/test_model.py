"""The multi-tower model: create_model, embed (order, unit vectors), save_model / anybind.load round trips."""

from __future__ import annotations

import json

import pytest
import torch

import anybind
from anybind.errors import CheckpointError
from encoder_inputs import synthetic_batch

BUILTIN = ("image", "text", "audio", "video", "points")
TEST_TOWERS = {m: f"{m}_{'vit' if m in ('image', 'audio', 'video') else 'transformer'}_test" for m in BUILTIN}


@pytest.fixture(scope="module")
def test_model() -> anybind.AnyBindModel:
    torch.manual_seed(0)
    return anybind.create_model(TEST_TOWERS).eval()


def synthetic_inputs(model, batch: int = 3) -> dict[str, torch.Tensor]:
    return {m: synthetic_batch(m, model.input_contract(m), batch=batch, seed=i) for i, m in enumerate(model.modalities)}


def test_default_model_is_the_tiny_towers_in_one_space():
    model = anybind.create_model()
    assert sorted(model.modalities) == sorted(BUILTIN)
    assert model.embed_dim == 128
    for m, enc in model.encoders.items():
        assert enc.embed_dim == model.embed_dim
        assert enc.registry_name == anybind.get_modality(m).default_encoder and enc.registry_name.endswith("_tiny")
    x = synthetic_batch("image", model.input_contract("image"), batch=1)
    with torch.no_grad():
        assert model({"image": x})["image"].shape == (1, 128)


def test_embed_dim_sets_every_tower():
    with torch.device("meta"):  # dimensions only
        model = anybind.create_model(embed_dim=64)
    assert model.embed_dim == 64 and sorted(model.modalities) == sorted(BUILTIN)
    assert all(enc.embed_dim == 64 and enc.build_kwargs["embed_dim"] == 64 for enc in model.encoders.values())
    small = anybind.create_model({"text": "text_transformer_test", "points": "points_transformer_test"}, embed_dim=64)
    out = small({"points": synthetic_batch("points", small.input_contract("points"))})
    assert out["points"].shape == (2, 64)


def test_towers_that_disagree_on_embed_dim_are_refused():
    with pytest.raises(ValueError, match="embed_dim"):
        anybind.create_model({"image": "image_vit_test", "text": "text_transformer_tiny"})
    with pytest.raises(ValueError, match="modality"):
        anybind.create_model({"audio": "image_vit_test"})


def test_forward_runs_only_the_given_modalities(test_model):
    inputs = synthetic_inputs(test_model)
    with torch.no_grad():
        out = test_model({"audio": inputs["audio"], "text": inputs["text"]})
    assert set(out) == {"audio", "text"}
    for z in out.values():
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_save_and_load_round_trip(test_model, tmp_path):
    path = anybind.save_model(tmp_path / "ckpt" / "model", test_model, config={"note": "round trip"})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    for m in BUILTIN:
        assert sidecar["encoders"][m]["name"] == TEST_TOWERS[m]
        assert sidecar["encoders"][m]["input_contract"] == test_model.input_contract(m)
    loaded = anybind.load(path)
    assert sorted(loaded.modalities) == sorted(BUILTIN) and loaded.embed_dim == test_model.embed_dim
    inputs = synthetic_inputs(test_model)
    with torch.no_grad():
        before, after = test_model(inputs), loaded(inputs)
    for m in BUILTIN:
        torch.testing.assert_close(after[m], before[m], rtol=0, atol=0)
        assert loaded.input_contract(m) == test_model.input_contract(m)


def test_load_only_some_modalities(test_model, tmp_path):
    path = anybind.save_model(tmp_path / "model", test_model)
    part = anybind.load(path, modalities=["text", "points"])
    assert sorted(part.modalities) == ["points", "text"]
    inputs = synthetic_inputs(test_model)
    with torch.no_grad():
        for m in ("text", "points"):
            torch.testing.assert_close(part({m: inputs[m]})[m], test_model({m: inputs[m]})[m], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no tower"):
        anybind.load(path, modalities=["thermal"])


def test_damaged_checkpoint_is_detected(test_model, tmp_path):
    path = anybind.save_model(tmp_path / "model", test_model)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        anybind.load(path)
    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(CheckpointError):
        anybind.load(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        anybind.load(path)
    path.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        anybind.load(path)


# --- embed(): raw in-memory inputs through the real transforms -----------------------------------------------


def raw_items(n: int = 3) -> dict[str, list]:
    """Decoded in-memory inputs of every built-in modality, each item different, sizes deliberately unequal."""
    g = torch.Generator().manual_seed(0)
    return {
        "image": [torch.randint(0, 256, (3, 36 + 4 * i, 40), dtype=torch.uint8, generator=g) for i in range(n)],
        "text": ["a red cube", "the sound of rain on a tin roof", "two dogs"][:n],
        "audio": [torch.randn(8000 + 3000 * i, generator=g) * 0.1 for i in range(n)],
        "video": [torch.randint(0, 256, (6 + 2 * i, 3, 36, 40), dtype=torch.uint8, generator=g) for i in range(n)],
        "points": [torch.rand(100 + 20 * i, 3, generator=g) for i in range(n)],
    }


def test_embed_returns_unit_vectors_in_input_order(test_model):
    pytest.importorskip("anybind.data.transforms")
    items = raw_items()
    batched = test_model.embed(items, batch_size=2)  # two batches, so order must survive batching
    assert sorted(batched) == sorted(BUILTIN)
    for m, z in batched.items():
        assert z.shape == (3, test_model.embed_dim) and z.dtype == torch.float32, m
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
        singles = torch.cat([test_model.embed({m: [item]})[m] for item in items[m]])
        torch.testing.assert_close(z, singles, rtol=1e-5, atol=1e-5, msg=lambda s: f"{m}: {s}")
        assert not torch.allclose(z[0], z[1], atol=1e-4), f"{m}: different inputs, same embedding"
        reversed_ = test_model.embed({m: items[m][::-1]})[m]
        torch.testing.assert_close(reversed_, z.flip(0), rtol=1e-5, atol=1e-5)


def test_embed_after_reload_is_identical(test_model, tmp_path):
    pytest.importorskip("anybind.data.transforms")
    items = raw_items(2)
    before = test_model.embed(items)
    loaded = anybind.load(anybind.save_model(tmp_path / "model", test_model))
    after = loaded.embed(items)
    for m in BUILTIN:
        torch.testing.assert_close(after[m], before[m], rtol=0, atol=0)
