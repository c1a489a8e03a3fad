"""anybind.bench.embed_files: its inputs, the digits tower it builds, and one real anybind-embed run read back
(no timing thresholds: only that the figures are parsed and consistent)."""

import json
import math
import wave

import pytest

import anybind
from anybind.bench import embed_files as ef


def test_captions_are_varied_and_reproducible(tmp_path):
    a = ef.make_captions(tmp_path / "a.jsonl", 300, seed=1)
    b = ef.make_captions(tmp_path / "b.jsonl", 300, seed=1)
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert a.read_text() == b.read_text() and len(rows) == 300
    assert len({r["text"] for r in rows}) > 250 and len({r["id"] for r in rows}) == 300


def test_the_digits_tower_follows_the_recipe():
    spec = ef.digits_audio_spec()
    tower = anybind.create_model({"audio": spec}).encoders["audio"]
    c = tower.input_contract
    assert (c["sample_rate"], c["num_mel_bins"], c["target_length"], c["clips"], c["clip_duration"]) == \
        (8000, 32, 100, 1, 1.0)
    assert len(tower.trunk.blocks) == 2


def test_parse_summary_reads_rate_and_shares():
    line = ("store x: 3 vectors\nthis run: embedded audio 3000 (3000 items, 0 failed) in 1 shard, 5.6 s, 535 items/s "
            "(read 25%, transform 55%, tower 20% of the work); fp32, 0 workers\n")
    assert ef.parse_summary(line) == {"run_s": 5.6, "items_per_s": 535.0, "read": 0.25, "transform": 0.55,
                                      "tower": 0.2}
    with pytest.raises(ValueError, match="no summary line"):
        ef.parse_summary("nothing here")


def test_one_embed_run_is_measured(tmp_path):
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i in range(24):  # enough work that the run's clock shows it (the summary gives seconds to 0.01 s)
        with wave.open(str(folder / f"{i}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
            f.writeframes(bytes(range(256)) * (20 + 10 * i))
    ckpt = anybind.save_model(tmp_path / "m.safetensors", anybind.create_model({"audio": "audio_vit_test"}))
    r = ef.run_embed(folder, ckpt, tmp_path / "store", "num_workers=0")
    assert r["items_per_s"] > 0 and math.isclose(r["read"] + r["transform"] + r["tower"], 1.0, abs_tol=0.02)
    assert r["wall_s"] > r["run_s"] > 0 and r["startup_s"] == pytest.approx(r["wall_s"] - r["run_s"])
