"""trainer.cache_frozen: frozen towers embed each preloaded sample once; the step's loss and gradients are unchanged."""

import pytest
import torch

import anybind
from anybind.train.recipe import build_run, compose_train_config, run

from tinydata import make_tiny_dataset


@pytest.fixture(scope="module")
def anchored(tmp_path_factory):
    """A tiny dataset (sample 3's image is broken) and an image-text checkpoint to freeze."""
    root = tmp_path_factory.mktemp("frozen_cache")
    manifest = make_tiny_dataset(root, n=16, modalities=("image", "text", "audio", "points"), val_every=8,
                                 corrupt={"image": [3]})
    anchor = run(compose_train_config([f"data.manifest={manifest}", "experiment=anchor", "debug=smoke",
                                       "eval.enabled=false", "trainer.max_steps=1", "trainer.ckpt_every=0"]),
                 run_dir=root / "anchor")
    return manifest, anchor.checkpoint_path


def bind_overrides(manifest, ckpt, *extra):
    return [f"data.manifest={manifest}", "debug=smoke", "modality=[image,text,audio,points]", "freeze=[image,text]",
            f"init_from={ckpt}", "data.preload=true", "data.batch_size=6", "eval.enabled=false", *extra]


def first_step(setup):
    """Loss and trainable gradients of one training step on the first batch of ``setup``."""
    batch = next(iter(setup.loader))
    setup.module.train()
    out = setup.module(batch["inputs"], batch["valid"])
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in setup.module.named_parameters() if p.grad is not None}
    return batch, out, grads


def test_cached_frozen_tower_gives_the_uncached_loss_and_gradients(anchored):
    manifest, ckpt = anchored
    plain = build_run(compose_train_config(bind_overrides(manifest, ckpt)))
    cached = build_run(compose_train_config(bind_overrides(manifest, ckpt, "trainer.cache_frozen=true")))
    assert cached.module.precomputed == ("image",) and plain.module.precomputed == ()

    b0, out0, g0 = first_step(plain)
    b1, out1, g1 = first_step(cached)
    assert b0["ids"] == b1["ids"]  # same seed, same batch
    n_img = int(b1["valid"]["image"].sum())
    assert b1["inputs"]["image"].shape == (n_img, plain.model.embed_dim)  # embeddings, not pixels
    assert b0["inputs"]["image"].ndim == 4
    assert "text" not in b1["inputs"]  # frozen and in no trained pair: never loaded
    torch.testing.assert_close(out1.loss, out0.loss, rtol=1e-5, atol=1e-6)
    for k in out0.pairs:
        torch.testing.assert_close(out1.pairs[k], out0.pairs[k], rtol=1e-5, atol=1e-6)
    assert set(g0) == set(g1) and not any(k.startswith("model.encoders.image.") for k in g1)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)

    # the cached rows are the frozen tower's own embeddings of each preloaded image
    enc = cached.model.encoders["image"].eval()
    i = int(b1["index"][b1["valid"]["image"]][0])
    with torch.no_grad():
        ref = enc(plain.dataset.load(i, "image").unsqueeze(0))[0]
    torch.testing.assert_close(cached.dataset.load(i, "image"), ref, rtol=1e-5, atol=1e-6)


def test_a_sample_that_failed_to_preload_is_reported_not_recomputed(anchored, tmp_path):
    manifest, ckpt = anchored
    s = build_run(compose_train_config(bind_overrides(manifest, ckpt, "trainer.cache_frozen=true")))
    row = s.dataset[(3, ("image", "audio"), ("image", "audio"))]
    assert "image" not in row["inputs"] and "audio" in row["inputs"]
    assert len(row["errors"]) == 1 and "s003.png" in row["errors"][0][2] and "cache_frozen" in row["errors"][0][2]

    # a whole run: trains, checkpoints, and the frozen image tower is the anchor's, unchanged
    result = run(compose_train_config(bind_overrides(manifest, ckpt, "trainer.cache_frozen=true",
                                                     "trainer.max_steps=3")), run_dir=tmp_path / "bind")
    bound, anchor = anybind.load(result.checkpoint_path), anybind.load(ckpt)
    for k, v in anchor.encoders["image"].state_dict().items():
        torch.testing.assert_close(bound.encoders["image"].state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("extra, match", [
    (["data.preload=false"], "data.preload=true"),
    (["+modality.image.augment.flip=0.5"], "augment"),
])
def test_cache_frozen_refuses_inputs_that_change_or_are_not_preloaded(anchored, extra, match):
    manifest, ckpt = anchored
    with pytest.raises(ValueError, match=match):
        build_run(compose_train_config(bind_overrides(manifest, ckpt, "trainer.cache_frozen=true", *extra)))
