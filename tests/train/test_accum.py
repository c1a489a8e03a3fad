"""trainer.accum_steps=K (cached negatives): the loss and every gradient equal those of one K-times larger batch."""

from __future__ import annotations

import pytest
import torch

import anybind
from anybind.data.dataset import ManifestDataset
from anybind.data.manifest import load_manifest
from anybind.losses import ContrastiveLoss
from anybind.train.accum import cached_loss_backward
from anybind.train.recipe import compose_train_config, run
from anybind.train.trainer import TrainModule

from tinydata import make_tiny_dataset

MODS = ("image", "text", "audio")


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    manifest = make_tiny_dataset(tmp_path_factory.mktemp("acc"), n=8, modalities=MODS, missing={"audio": [1, 6]})
    model = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test", "audio": "audio_vit_test"})
    ds = ManifestDataset(load_manifest(manifest), {m: model.input_contract(m) for m in MODS})
    rows = [ds[i] for i in range(8)]
    return ds.collate(rows), [ds.collate(rows[:4]), ds.collate(rows[4:])]


def _module(seed=0, drop_path=0.0, frozen=()):
    torch.manual_seed(seed)
    model = anybind.create_model({"image": {"name": "image_vit_test", "drop_path": drop_path},
                                  "text": "text_transformer_test", "audio": "audio_vit_test"})
    return TrainModule(model, ContrastiveLoss([("image", "text"), ("image", "audio")]), frozen)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _micro(batch):
    return batch["inputs"], batch["valid"]


def test_cached_negatives_equal_the_big_batch(batches):
    big, small = batches
    ref = _module()
    loss = ref(*_micro(big)).loss
    loss.backward()
    acc = _module()
    out = cached_loss_backward(acc, [_micro(b) for b in small])
    assert torch.allclose(out.loss, loss.detach(), atol=1e-6)
    g_ref, g_acc = _grads(ref), _grads(acc)
    assert set(g_ref) == set(g_acc) and len(g_ref) > 20
    for n in g_ref:
        assert torch.allclose(g_acc[n], g_ref[n], atol=1e-5, rtol=1e-4), n
    # and it differs from plain accumulation (each micro-batch's own negatives only)
    plain = _module()
    for b in small:
        (plain(*_micro(b)).loss / 2).backward()
    assert any(not torch.allclose(plain.state_dict(keep_vars=True)[n].grad, g_ref[n], atol=1e-4) for n in g_ref)


def test_dropout_masks_replay_in_the_second_forward(batches):
    _, small = batches
    ref = _module(drop_path=0.5)
    torch.manual_seed(123)
    feats = [ref.embed_rows(*_micro(b)) for b in small]  # one forward with grad, same RNG stream
    cat = {m: torch.cat([f[m] for f in feats]) for m in feats[0]}
    valid = {m: torch.cat([b["valid"][m] for b in small]) for m in feats[0]}
    ref.loss(cat, valid).loss.backward()
    acc = _module(drop_path=0.5)
    torch.manual_seed(123)
    cached_loss_backward(acc, [_micro(b) for b in small])
    g_ref, g_acc = _grads(ref), _grads(acc)
    for n in g_ref:
        assert torch.allclose(g_acc[n], g_ref[n], atol=1e-5, rtol=1e-4), n
    # without the replay the second forward would draw other masks: the gradients would not match
    torch.manual_seed(123)
    acc2 = _module(drop_path=0.5)
    import anybind.train.accum as accum
    real = accum._set_rng_state
    try:
        accum._set_rng_state = lambda state, device: None
        cached_loss_backward(acc2, [_micro(b) for b in small])
    finally:
        accum._set_rng_state = real
    assert any(not torch.allclose(_grads(acc2)[n], g_ref[n], atol=1e-5) for n in g_ref if "image" in n)

def test_frozen_tower_gets_no_gradient(batches):
    _, small = batches
    acc = _module(frozen=("image",))
    cached_loss_backward(acc, [_micro(b) for b in small])
    names = set(_grads(acc))
    assert names and not any(n.startswith("model.encoders.image.") for n in names)


def test_training_run_with_accum_steps(tmp_path, batches):
    manifest = make_tiny_dataset(tmp_path / "d", n=16, modalities=MODS)
    cfg = compose_train_config([f"data.manifest={manifest}", "debug=smoke", "modality=[image,text,audio]",
                                "trainer.accum_steps=2", "trainer.max_steps=2", "eval.enabled=false",
                                "trainer.tensorboard=false"])
    result = run(cfg, run_dir=tmp_path / "run")
    assert result.metrics["step"] == 2 and result.metrics["samples_seen"] == 2 * 2 * 4
    with pytest.raises(ValueError, match="cannot both be > 1"):
        run(compose_train_config([f"data.manifest={manifest}", "debug=smoke", "modality=[image,text]",
                                  "trainer.accum_steps=2", "trainer.grad_accum=2", "eval.enabled=false",
                                  "trainer.tensorboard=false"]), run_dir=tmp_path / "run2")
