"""trainer.channels_last: conv kernels stored NHWC, same outputs, plain checkpoints."""

import torch

import anybind
from anybind.train.memory_format import conv_kernels_channels_last
from anybind.train.recipe import build_run, compose_train_config, run

from tinydata import make_tiny_dataset


def test_channels_last_kernels_give_the_same_embeddings():
    torch.manual_seed(0)
    enc = anybind.create_encoder("image_vit_test", conv_stem=[8, 16, 32])
    x = torch.randn(3, 3, 32, 32)
    ref = enc(x)
    params = list(enc.parameters())
    assert conv_kernels_channels_last(enc) == 4  # three stride-2 convolutions and the 1x1 projection
    assert [p is q for p, q in zip(params, enc.parameters())] == [True] * len(params)  # same Parameters
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(c.weight.is_contiguous() for c in convs if c.kernel_size == (3, 3))  # 1x1: both layouts agree
    torch.testing.assert_close(enc(x), ref, rtol=1e-5, atol=1e-5)


def test_channels_last_run_trains_and_saves_plain_weights(tmp_path):
    manifest = make_tiny_dataset(tmp_path / "data", n=8, modalities=("image", "text"), val_every=4)
    over = [f"data.manifest={manifest}", "debug=smoke", "modality=[image,text]", "eval.enabled=false",
            "+modality.image.kwargs.conv_stem=[8,16,32]", "trainer.channels_last=true", "trainer.max_steps=2"]
    s = build_run(compose_train_config(over))
    conv = s.model.encoders["image"].stem.proj[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    result = run(compose_train_config(over), run_dir=tmp_path / "run")
    model = anybind.load(result.checkpoint_path)
    w = model.encoders["image"].stem.proj[0].weight
    assert w.is_contiguous() and torch.isfinite(w).all()


def test_channels_last_takes_a_list_of_towers(tmp_path):
    manifest = make_tiny_dataset(tmp_path / "data", n=8, modalities=("image", "audio"), val_every=4)
    over = [f"data.manifest={manifest}", "debug=smoke", "modality=[image,audio]", "eval.enabled=false",
            "+modality.image.kwargs.conv_stem=[8,16,32]", "+modality.audio.kwargs.conv_stem=[8,16,32,64]",
            "trainer.channels_last=[image]", "trainer.max_steps=1"]
    s = build_run(compose_train_config(over))
    layout = {m: [c.weight.is_contiguous(memory_format=torch.channels_last) and not c.weight.is_contiguous()
                  for c in s.model.encoders[m].modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)]
              for m in ("image", "audio")}
    assert layout["image"] and all(layout["image"]) and not any(layout["audio"])
    bad = [o if not o.startswith("trainer.channels_last") else "trainer.channels_last=[video]" for o in over]
    try:
        build_run(compose_train_config(bad))
    except ValueError as exc:
        assert "trainer.channels_last=['video']" in str(exc) and "no video tower" in str(exc)
    else:
        raise AssertionError("a tower the run lacks must be refused")


def test_channels_last_takes_one_tower_by_name():
    from anybind.train.memory_format import channels_last_towers

    model = anybind.create_model({"image": {"name": "image_vit_test", "conv_stem": [8, 16, 32]},
                                  "audio": {"name": "audio_vit_test"}})
    assert channels_last_towers(model, "image") == 4
    assert channels_last_towers(model, ["image"]) == 4  # a list names the same tower
