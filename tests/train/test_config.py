"""Every shipped training config composes and builds; typos fail at compose time; pairs, groups, schedule."""

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

import anybind
import conf
from anybind.train.optim import WarmupCosine, build_optimizer
from anybind.train.recipe import build_run, compose_train_config, resolve_pairs

from tinydata import make_tiny_dataset

CONF = Path(conf.__file__).resolve().parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("cfgdata"), n=12, modalities=("image", "text", "points"),
                             val_every=4)


@pytest.fixture(scope="module")
def anchor_checkpoint(tmp_path_factory):
    model = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test"})
    path = tmp_path_factory.mktemp("anchor") / "last"
    anybind.save_model(path, model, extra={"trained_pairs": [["image", "text"]]})
    return path


def group_options():
    """(group, option) for every YAML file of every training config group shipped in conf/ (Hydra's own groups and
    anybind-eval's benchmark/, composed by tests/eval/test_eval_cli.py, aside)."""
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) > 1 and rel.parts[0] not in ("hydra", "benchmark"):
            out.append(("/".join(rel.parts[:-1]), path.stem))
    return out


def test_every_group_option_is_found():
    groups = {g for g, _ in group_options()}
    assert {"modality", "data", "loss", "optim", "trainer", "experiment", "debug"} <= groups
    assert ("experiment", "anchor") in group_options() and ("experiment", "bind") in group_options()


def test_default_config_builds_tiny_five_modality_model(manifest):
    cfg = compose_train_config([f"data.manifest={manifest}", "data.batch_size=2", "data.num_workers=0"])
    assert list(cfg.modality) == ["image", "text", "audio", "video", "points"]
    assert cfg.modality.audio.encoder == "audio_vit_tiny"
    # the tiny data has no audio/video: building must say which pair has no samples (before building towers)
    with pytest.raises(ValueError, match="image-audio"):
        build_run(cfg)
    cfg = compose_train_config([f"data.manifest={manifest}", "data.batch_size=2", "data.num_workers=0",
                                "modality=[image,points]"])
    s = build_run(cfg)
    assert s.model.embed_dim == 128 and s.model.input_contract("image")["image_size"] == 224
    assert [p.name for p in s.pairs] == ["image-points"]


@pytest.mark.parametrize("group,option", group_options())
def test_every_shipped_config_composes_and_builds(group, option, manifest, anchor_checkpoint):
    overrides = [f"data.manifest={manifest}", "model_size=test", "data.batch_size=2", "data.num_workers=0",
                 "modality=[image,text,points]"]
    if group == "modality":
        overrides[-1] = f"modality=[image,{option}]" if option != "image" else "modality=[image,text]"
        if option in ("audio", "video"):  # no such files in the tiny data: compose, and check the encoder name
            cfg = compose_train_config(overrides)
            assert cfg.modality[option].encoder.endswith("_test")
            anybind.create_encoder(cfg.modality[option].encoder)
            return
    else:
        overrides.append(f"{group}={option}")
    if option == "bind":
        overrides.append(f"init_from={anchor_checkpoint}")
    cfg = compose_train_config(overrides)
    if cfg.freeze and not cfg.init_from:  # a later stage run without its earlier stage's checkpoint
        with pytest.raises(ValueError, match="init_from"):
            build_run(cfg)
        return
    pinned = [c.encoder for c in cfg.modality.values() if not c.encoder.endswith("_test")]
    if pinned:  # an experiment that pins full-size towers (e.g. converted ImageBind ones): check names, skip the build
        assert all(name in anybind.list_encoders() for name in pinned), pinned
        return
    s = build_run(cfg)
    assert s.max_steps > 0 and s.optimizer.param_groups and len(s.sampler) > 0
    if option == "bind":
        assert set(s.frozen) == {"image", "text"}
        assert all(not p.requires_grad for p in s.model.encoders.image.parameters())
        assert [p.name for p in s.pairs] == ["image-points"]


def test_slurm_launcher_config_composes_when_plugin_installed(manifest):
    try:
        importlib.import_module("hydra_plugins.hydra_submitit_launcher")
    except ImportError:
        pytest.skip("hydra-submitit-launcher is not installed (optional)")
    from hydra import compose, initialize_config_module

    with initialize_config_module("conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"data.manifest={manifest}", "hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == 8


@pytest.mark.parametrize("override,name", [("trainer.max_step=3", "trainer.max_step"),
                                           ("+trainer.max_step=3", "max_step"),
                                           ("modality.image.encodr=x", "modality.image.encodr"),
                                           ("+data.batchsize=3", "batchsize")])
def test_misspelled_key_fails_at_compose_time_naming_it(override, name, manifest):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as info:
        compose_train_config([f"data.manifest={manifest}", override])
    assert name in str(info.value) or name in str(info.value.__cause__)


def test_wrong_type_fails_at_compose_time(manifest):
    with pytest.raises(ConfigCompositionException):
        compose_train_config([f"data.manifest={manifest}", "trainer.max_steps=many"])


def test_unknown_encoder_name_suggests_close_matches(manifest):
    cfg = compose_train_config([f"data.manifest={manifest}", "modality=[image,text]", "modality.text.encoder=text_transfomer_test"])
    with pytest.raises(anybind.RegistryError, match="text_transformer_test"):
        build_run(cfg)


def test_pairs_default_explicit_and_errors():
    assert [p.name for p in resolve_pairs(["image", "text", "audio"], "image", [], [])] == ["image-text", "image-audio"]
    # both towers frozen: nothing to train in that default pair
    assert [p.name for p in resolve_pairs(["image", "text", "audio"], "image", [], ["image", "text"])] == ["image-audio"]
    specs = resolve_pairs(["image", "audio", "text"], "image",
                          [{"modalities": ["audio", "text"], "loss_weight": 0.5, "sampling_weight": 3}], [])
    assert (specs[0].name, specs[0].loss_weight, specs[0].sampling_weight) == ("audio-text", 0.5, 3.0)
    with pytest.raises(ValueError, match="anchor"):
        resolve_pairs(["audio", "text"], "image", [], [])
    with pytest.raises(ValueError, match="points"):
        resolve_pairs(["image", "text"], "image", [{"modalities": ["image", "points"]}], [])
    with pytest.raises(ValueError, match="frozen"):
        resolve_pairs(["image", "text"], "image", [{"modalities": ["image", "text"]}], ["image", "text"])


def test_no_weight_decay_on_norms_biases_tokens_embeddings_and_temperature(manifest):
    s = build_run(compose_train_config([f"data.manifest={manifest}", "model_size=test", "data.batch_size=2",
                                        "data.num_workers=0", "modality=[image,text,points]"]))
    groups = {g["name"]: set(g["param_names"]) for g in s.optimizer.param_groups}
    nd, d = groups["no_decay"], groups["decay"]
    for name in ("loss.log_scale.image-text", "model.encoders.image.stem.cls_token", "model.encoders.image.stem.pos_embed",
                 "model.encoders.text.stem.token_embedding.weight", "model.encoders.image.head.norm.weight",
                 "model.encoders.image.trunk.blocks.0.attn.qkv.bias"):
        assert name in nd, name
    assert "model.encoders.image.trunk.blocks.0.attn.qkv.weight" in d
    assert "model.encoders.image.head.proj.weight" in d
    assert {g["weight_decay"] for g in s.optimizer.param_groups if g["name"] == "no_decay"} == {0.0}
    # the fused AdamW kernel on CPU too: the multi-tensor path took ~10x longer on a 7M-parameter model
    assert s.optimizer.defaults["fused"] is True


def test_warmup_then_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = WarmupCosine(opt, total_steps=12, warmup_steps=2, min_ratio=0.1)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(12):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    restored = WarmupCosine(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0), total_steps=12,
                            warmup_steps=2, min_ratio=0.1)
    restored.load_state_dict(sched.state_dict())
    assert restored.get_last_lr() == sched.get_last_lr()


def test_cli_composes_from_any_directory(tmp_path, manifest):
    """pkg://conf: the console script finds its configs wherever it runs (and from an installed wheel)."""
    exe = Path(sys.executable).with_name("anybind-train")
    proc = subprocess.run([str(exe), "--cfg", "job", "--resolve", "debug=smoke", f"data.manifest={manifest}",
                           "modality=[image,points]"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modalities = proc.stdout.split("modality:")[1].split("anchor:")[0]
    assert "encoder: points_transformer_test" in modalities and "audio" not in modalities
    assert not any(tmp_path.iterdir())  # --cfg prints and creates no run directory


def test_experiment_settings_for_unselected_modalities_are_dropped():
    cfg = compose_train_config(["experiment=world", "modality=[image,audio]"])
    assert list(cfg.modality) == ["image", "audio"]
    assert cfg.modality.audio.kwargs.num_mel_bins == 64 and cfg.modality.image.kwargs.image_size == 64


def test_epochs_set_the_step_budget_and_bad_choices_fail_by_name(manifest):
    base = [f"data.manifest={manifest}", "model_size=test", "data.num_workers=0", "modality=[image,points]",
            "data.batch_size=2"]
    s = build_run(compose_train_config(base + ["trainer.max_epochs=3", "trainer.grad_accum=2"]))
    assert len(s.sampler) == 4 and s.max_steps == 6  # 9 training samples -> 4 batches of 2; 3 epochs / 2 micro-steps
    with pytest.raises(ValueError, match="data.batching"):
        build_run(compose_train_config(base + ["data.batching=shuffled"]))
    with pytest.raises(ValueError, match="trainer.strategy"):
        build_run(compose_train_config(base + ["trainer.strategy=zero3"]))
    with pytest.raises(ValueError, match="freeze"):
        build_run(compose_train_config(base + ["freeze=[audio]"]))
