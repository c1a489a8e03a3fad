"""The digits recipe end to end at test sizes: prepare -> anchor -> bind -> evaluate, on a small FSDD/MNIST subset."""

import json
from pathlib import Path

import pytest
import torch

from anybind.checkpoint import load_tensors
from anybind.data.digits import DIGIT_WORDS, prepare_digits
from anybind.train.digits import confusion_matrix, run_digits
from anybind.train.recipe import build_model, compose_train_config

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo root
FSDD, MNIST = SHARED / "fsdd" / "recordings", SHARED / "mnist"

QUICK = ["model_size=test", "trainer.max_steps=2", "data.batch_size=8", "trainer.log_every=1", "trainer.progress=false",
         "trainer.csv=false", "optim.warmup_steps=1"]


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix(torch.tensor([1, 1, 2, 0]), torch.tensor([1, 2, 2, 0]), num_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_experiment_configs_compose_and_build():
    anchor = compose_train_config(["experiment=digits_anchor", "model_size=test", "data.manifest=x.jsonl"])
    assert sorted(anchor.modality) == ["image", "text"] and not anchor.freeze
    bind = compose_train_config(["experiment=digits", "init_from=a", "model_size=test", "data.manifest=x.jsonl"])
    assert sorted(bind.modality) == ["audio", "image", "text"] and list(bind.freeze) == ["image", "text"]
    model = build_model(bind)
    assert model.input_contract("image")["image_size"] == 28
    audio = model.input_contract("audio")
    assert (audio["sample_rate"], audio["num_mel_bins"], audio["clips"]) == (8000, 32, 1)
    assert model.input_contract("text")["context_length"] == 16


def test_digits_recipe_end_to_end(tmp_path):
    if not (FSDD.is_dir() and MNIST.is_dir()):
        pytest.skip("../shared/data (FSDD, MNIST) missing")
    data = tmp_path / "data"
    prepare_digits(FSDD, MNIST, data, speakers=("george", "jackson"), heldout_speakers=("george",), max_take=7,
                   images_per_class=10, images_per_recording=2)
    m = run_digits(data, tmp_path / "run", anchor_overrides=QUICK, bind_overrides=QUICK)

    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["zero_shot"]["fsdd/audio"]["n"] == 50  # jackson's takes 0-4 of ten digits
    assert saved["zero_shot"]["fsdd_heldout/audio"]["n"] == 70  # george's takes 0-6
    assert saved["zero_shot"]["mnist/image"]["n"] == 20
    for key in ("fsdd/audio", "fsdd_heldout/audio", "mnist/image"):
        assert set(saved["zero_shot"][key]) == {"top1", "top5", "n"} and 0.0 <= saved["zero_shot"][key]["top1"] <= 1.0
    ret = saved["retrieval"]
    assert ret["audio->text"]["emergent"] and ret["text->audio"]["emergent"]
    assert not ret["audio->image"]["emergent"] and not ret["image->text"]["emergent"]
    assert {"R@1", "R@5", "R@10", "n"} <= set(ret["audio->image"])
    assert saved["heldout"]["retrieval"]["audio->text"]["emergent"]
    cm = torch.tensor(saved["confusion"]["audio"])
    assert cm.shape == (10, 10) and cm.sum(1).tolist() == [5] * 10
    assert abs(cm.diag().sum().item() / 50 - saved["zero_shot"]["fsdd/audio"]["top1"]) < 1e-6
    assert saved["timing"]["total"]["cpu_s"] > 0 and m["zero_shot"] == saved["zero_shot"]

    png = tmp_path / "run" / "confusion_audio.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "run" / "retrieval_R@1.png").is_file()
    # the bound checkpoint trained image-text (stage 1) and image-audio (stage 2), never audio-text
    _, meta = load_tensors(Path(saved["runs"]["bind"]) / "checkpoints" / "last.safetensors")
    assert sorted(sorted(p) for p in meta["trained_pairs"]) == [["audio", "image"], ["image", "text"]]
    assert sorted(meta["frozen"]) == ["image", "text"]
    labels = {json.loads(line)["label"] for line in (data / "audio_image.jsonl").read_text().splitlines()}
    assert labels == set(DIGIT_WORDS)
