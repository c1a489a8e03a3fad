"""Leave-one-speaker-out over the digits recipe at test sizes: one anchor, one bind per held-out speaker."""

import json
from pathlib import Path

import pytest

from anybind.train.digits_loso import fsdd_speakers, run_loso, table

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FSDD, MNIST = SHARED / "fsdd" / "recordings", SHARED / "mnist"
QUICK = ["model_size=test", "trainer.max_steps=2", "data.batch_size=8", "trainer.log_every=1", "trainer.progress=false",
         "trainer.csv=false", "optim.warmup_steps=1"]


def test_fsdd_speakers_reads_file_names(tmp_path):
    for name in ("3_theo_12.wav", "0_george_0.wav", "9_theo_1.wav", "notes.txt", "x_bad_1.wav"):
        (tmp_path / name).write_bytes(b"")
    assert fsdd_speakers(tmp_path) == ["george", "theo"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no FSDD recordings"):
        fsdd_speakers(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fsdd_speakers(tmp_path / "nowhere")


def test_each_speaker_held_out_in_turn_with_one_anchor(tmp_path):
    if not (FSDD.is_dir() and MNIST.is_dir()):
        pytest.skip("../shared/data (FSDD, MNIST) missing")
    speakers = ["george", "jackson"]
    bind = [*QUICK, "+modality.audio.augment.freq_warp=[0.9,1.1]", "+modality.audio.augment.time_stretch=[0.9,1.1]"]
    r = run_loso(tmp_path / "data", tmp_path / "out", speakers=speakers, fsdd=FSDD, mnist=MNIST,
                 anchor_overrides=QUICK, bind_overrides=bind,
                 prepare={"speakers": tuple(speakers), "max_take": 7, "images_per_class": 10, "images_per_recording": 2})

    saved = json.loads((tmp_path / "out" / "loso.json").read_text())
    assert list(saved["speakers"]) == speakers and saved["mean"] == r["mean"]
    assert (tmp_path / "out" / "george" / "anchor").is_dir() and not (tmp_path / "out" / "jackson" / "anchor").exists()
    second = json.loads((tmp_path / "out" / "jackson" / "metrics.json").read_text())
    shared_anchor = (tmp_path / "out" / "george" / "anchor" / "checkpoints" / "last").resolve()  # its step folder
    assert Path(second["runs"]["anchor"]) == shared_anchor
    for s in speakers:
        row = saved["speakers"][s]
        assert row["heldout_n"] == 70 and row["test_n"] == 50  # 10 digits x takes 0-6; the other speaker's takes 0-4
        train = [json.loads(line) for line in (tmp_path / "data" / f"heldout-{s}" / "audio_image.jsonl").open()]
        assert train and s not in {t["speaker"] for t in train if t["split"] == "train"}  # never heard in training
    mean = sum(saved["speakers"][s]["heldout_top1"] for s in speakers) / 2
    assert abs(saved["mean"]["heldout_top1"] - mean) < 1e-12
    assert "| george |" in table(saved) and "**mean**" in table(saved)
