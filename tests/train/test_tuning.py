"""Per-tower tuning: frozen / last_n / LoRA (through peft), lr scales, LoRA in checkpoints and merging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import anybind
from anybind.lora import add_lora, has_lora, merge_lora
from anybind.train.optim import build_optimizer, param_groups
from anybind.train.tuning import DEFAULT_TUNE, apply_tuning, merge_checkpoint, train_last_n, tune_options

MINILM_VOCAB = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-MiniLM-L6-v2" / "vocab.txt"
TEXTS = ["a red cube", "a blue sphere", "two dogs barking", "a small green cone"]


@pytest.fixture
def bert_folder(tmp_path) -> Path:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    if not MINILM_VOCAB.is_file():
        pytest.skip(f"{MINILM_VOCAB} not found")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    transformers.BertTokenizer(str(MINILM_VOCAB), do_lower_case=True).save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def _train(model, modality: str, batch: torch.Tensor, steps: int = 3, lr_scales=None) -> torch.optim.Optimizer:
    """A few AdamW steps pulling each row's embedding away from the others (any loss that moves every weight)."""
    model.train()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, lr_scales=lr_scales)
    for _ in range(steps):
        z = model.encoders[modality](batch)
        loss = F.cross_entropy(z @ z.roll(1, 0).T / 0.1, torch.arange(len(z)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def _text_batch(model) -> torch.Tensor:
    t = anybind.get_modality("text").make_transform(model.input_contract("text"))
    return torch.stack([t(s) for s in TEXTS])


def test_lora_trains_adapters_and_keeps_the_base_bit_identical(bert_folder):
    from safetensors.torch import load_file

    model = anybind.create_model({"text": {"name": "hf_text", "path": str(bert_folder), "embed_dim": 8}})
    names = add_lora(model.encoders["text"], rank=4, alpha=8)
    assert names and all(n.startswith("model.encoder.layer.") for n in names)  # attention + MLP, not the pooler
    assert any(n.endswith("attention.self.query") for n in names) and any(n.endswith("intermediate.dense") for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, "text", _text_batch(model))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_" in n or n.endswith("proj.weight") for n in changed)
    assert any("lora_B" in n for n in changed)
    original = load_file(str(bert_folder / "model.safetensors"))
    state = model.encoders["text"].model.state_dict()
    for key, value in original.items():
        k = key.removeprefix("bert.")
        k = k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias") \
            if k.rsplit(".", 1)[0] in {n.removeprefix("model.") for n in names} else k
        assert torch.equal(state[k], value), key


def test_lora_checkpoint_reloads_and_merges_to_the_same_embeddings(bert_folder, tmp_path):
    model = anybind.create_model({"text": {"name": "hf_text", "path": str(bert_folder), "embed_dim": 8}})
    add_lora(model.encoders["text"], rank=4, alpha=8, targets=["query", "value"])
    _train(model, "text", _text_batch(model))
    adapted = model.embed({"text": TEXTS})["text"]
    anybind.save_model(tmp_path / "lora" / "model", model)
    again = anybind.load(tmp_path / "lora" / "model")
    assert has_lora(again) and torch.equal(again.embed({"text": TEXTS})["text"], adapted)
    merge_checkpoint(tmp_path / "lora" / "model", tmp_path / "merged" / "model")
    merged = anybind.load(tmp_path / "merged" / "model")
    assert not has_lora(merged) and not any("lora" in k for k in merged.state_dict())
    assert "lora" not in merged.checkpoint_meta["encoders"]["text"]
    assert (merged.embed({"text": TEXTS})["text"] - adapted).abs().max() < 1e-5
    merge_lora(model)  # in place, same numbers
    assert (model.embed({"text": TEXTS})["text"] - adapted).abs().max() < 1e-5


def test_last_n_trains_only_the_final_blocks_and_what_follows():
    model = anybind.create_model({"text": {"name": "text_transformer_test", "depth": 3}})
    tower = model.encoders["text"]
    trained = train_last_n(tower, 1)
    assert all(n.startswith(("trunk.blocks.2.", "head.")) for n in trained) and "head.proj.weight" in trained
    ids = anybind.get_modality("text").make_transform(model.input_contract("text"))
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    _train(model, "text", torch.stack([ids(s) for s in TEXTS]))
    for n, p in tower.named_parameters():
        assert torch.equal(p, before[n]) == (n not in trained), n
    with pytest.raises(ValueError, match="has 3 blocks"):
        train_last_n(tower, 4)


def test_unknown_lora_target_and_bad_mode_are_clear_errors():
    pytest.importorskip("peft")
    tower = anybind.create_encoder("text_transformer_test")
    with pytest.raises(ValueError, match=r"'quux' matches no nn.Linear layer of the text tower.*fc1.*qkv"):
        add_lora(tower, targets=["qkv", "quux"])
    with pytest.raises(ValueError, match="tune.mode must be one of"):
        tune_options({"mode": "partial"})
    assert tune_options(None) == DEFAULT_TUNE
    assert set(add_lora(anybind.create_encoder("text_transformer_test"))) == {
        "trunk.blocks.0.attn.qkv", "trunk.blocks.0.attn.proj", "trunk.blocks.0.mlp.fc1", "trunk.blocks.0.mlp.fc2"}


def test_lr_scale_gives_a_tower_its_own_groups():
    model = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test"})
    plain = param_groups(model, 0.1)
    assert [g["name"] for g in plain] == ["decay", "no_decay"]
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, lr_scales={"encoders.text.": 0.1})
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"decay", "no_decay", "decay@encoders.text.", "no_decay@encoders.text."}
    assert by_name["decay@encoders.text."]["lr"] == pytest.approx(1e-4) and by_name["decay"]["lr"] == 1e-3
    assert all(n.startswith("encoders.text.") for n in by_name["decay@encoders.text."]["param_names"])
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(len(g["params"]) for g in plain)


def test_recipe_tune_frozen_equals_freeze_and_lora_reaches_the_optimizer(tmp_path):
    from anybind.train.recipe import build_run, compose_train_config

    from tinydata import make_tiny_dataset

    manifest = make_tiny_dataset(tmp_path / "d", n=8, modalities=("image", "text"), val_every=4)
    anchor = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test"})
    anybind.save_model(tmp_path / "anchor" / "last", anchor)
    base = [f"data.manifest={manifest}", "model_size=test", "data.batch_size=2", "data.num_workers=0",
            "modality=[image,text]", f"init_from={tmp_path / 'anchor' / 'last'}"]
    a = build_run(compose_train_config(base + ["freeze=[image]"]))
    b = build_run(compose_train_config(base + ["modality.image.tune.mode=frozen"]))
    assert a.frozen == b.frozen == ["image"]
    assert [g["param_names"] for g in a.optimizer.param_groups] == [g["param_names"] for g in b.optimizer.param_groups]
    pytest.importorskip("peft")
    c = build_run(compose_train_config(base + ["modality.text.tune.mode=lora", "modality.text.tune.lr_scale=0.5",
                                               "modality.text.tune.lora.rank=2"]))
    names = [n for g in c.optimizer.param_groups if g.get("lr_scale") == 0.5 for n in g["param_names"]]
    assert names and all(".lora_" in n or ".head." in n for n in names)
    with pytest.raises(ValueError, match="unknown|matches no"):
        build_run(compose_train_config(base + ["modality.text.tune.mode=lora", "modality.text.tune.lora.targets=[nope]"]))
