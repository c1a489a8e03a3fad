"""The digits recipe with the frozen pretrained MiniLM text tower: configs, frozen-without-init_from, unseen prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anybind.data.digits import CAPTION_TEMPLATES, DIGIT_WORDS
from anybind.train.digits import UNSEEN_TEMPLATES, unseen_prompt_metrics, unseen_prompts
from anybind.train.recipe import build_run, compose_train_config

from tinydata import make_tiny_dataset

MINILM = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-MiniLM-L6-v2"


def test_unseen_phrasings_are_new_and_name_each_digit_once():
    assert len(UNSEEN_TEMPLATES) >= 20 and not set(UNSEEN_TEMPLATES) & set(CAPTION_TEMPLATES)
    for t in UNSEEN_TEMPLATES:
        prompts = unseen_prompts(t)
        assert len(set(prompts)) == 10, t
    assert unseen_prompts("the number just before {next}")[9] == "the number just before ten"


def test_unseen_prompt_metrics_scores_each_phrasing():
    emb = torch.eye(10)  # audio row d is digit d
    keys = list(DIGIT_WORDS)
    per_digit = torch.eye(10)

    class Fixed:
        def embed(self, inputs, batch_size=0):
            return {"text": per_digit.repeat(len(inputs["text"]) // 10, 1)}

    out = unseen_prompt_metrics(Fixed(), emb, keys)
    assert out["n_templates"] == len(UNSEEN_TEMPLATES) and out["mean_top1"] == out["min_top1"] == 1.0
    out = unseen_prompt_metrics(Fixed(), emb.roll(1, 0), keys)
    assert out["mean_top1"] == out["ensemble_top1"] == 0.0


def test_minilm_anchor_stage_freezes_the_pretrained_text_tower_without_init_from(tmp_path):
    pytest.importorskip("transformers")
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} not found")
    manifest = make_tiny_dataset(tmp_path / "d", n=8, modalities=("image", "text"), val_every=4)
    cfg = compose_train_config(["experiment=digits_minilm_anchor", f"data.manifest={manifest}", "data.preload=false", "data.batch_size=2",
                                f"modality.text.kwargs.path={MINILM}", "modality.image.kwargs.image_size=32",
                                "modality.image.kwargs.patch_size=16"])
    s = build_run(cfg)
    assert s.frozen == ["text"] and s.model.embed_dim == 384 and s.model.encoders["text"].registry_name == "hf_text"
    trained = {n for g in s.optimizer.param_groups for n in g["param_names"]}
    assert trained and not any(n.startswith("model.encoders.text.") for n in trained)
    bind = compose_train_config(["experiment=digits_minilm", "init_from=x", "data.manifest=x.jsonl"])
    assert list(bind.freeze) == ["image", "text"] and bind.modality.audio.kwargs.embed_dim == 384
    scratch = compose_train_config(["experiment=digits_anchor", f"data.manifest={manifest}", "freeze=[text]",
                                    "model_size=test"])
    with pytest.raises(ValueError, match="init_from"):  # a random tower frozen: still refused
        build_run(scratch)
