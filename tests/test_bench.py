"""anybind-bench: every suite's quick mode at test sizes, checked for a sane, self-consistent JSON report.

No timing thresholds: only that what was measured is positive, finite, and that the derived figures (ratios,
rates, FLOP counts) follow from the measured ones.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from anybind.bench import main
from anybind.bench.common import FAMILIES, synthetic_input
from anybind.bench.encoders import MatmulPeak

ENV_KEYS = {"date", "cpu_model", "cpu_count", "threads", "torch", "device", "loadavg", "command"}


def _run(tmp_path, *argv) -> dict:
    out = tmp_path / "bench.json"
    report = main([*argv, "--json", str(out)])
    on_disk = json.loads(out.read_text())
    assert on_disk["suites"].keys() == report["suites"].keys()
    assert ENV_KEYS <= on_disk["environment"].keys()
    for suite in on_disk["suites"].values():
        assert ENV_KEYS <= suite["environment"].keys()
        assert len(suite["environment"]["loadavg"]) == 3 and len(suite["loadavg_end"]) == 3
        assert suite["seconds"] >= 0
    return on_disk


def _positive(*values) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, values


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work")


def test_matmul_peak_counts_products():
    mm = MatmulPeak(64, "fp32", torch.device("cpu"))
    flops, seconds = mm.sustained(0.0, min_products=3)
    assert flops == 3 * 2 * 64**3 and seconds > 0
    _positive(mm.best(2))


@pytest.mark.parametrize("modality", list(FAMILIES))
def test_synthetic_inputs_fit_the_test_towers(modality):
    import anybind

    enc = anybind.create_encoder(f"{FAMILIES[modality]}_test")
    z = enc(synthetic_input(modality, enc.input_contract, 3))
    assert z.shape == (3, enc.embed_dim) and torch.isfinite(z).all()


def test_encoders_suite(tmp_path):
    report = _run(tmp_path, "encoders", "--quick", "--sizes", "test", "--modalities", "image,points",
                  "--precision", "fp32,bf16", "--rounds", "2", "--tokens", "64")
    suite = report["suites"]["encoders"]
    rows = suite["rows"]
    assert [(r["encoder"], r["precision"]) for r in rows] == [
        ("image_vit_test", "fp32"), ("image_vit_test", "bf16"),
        ("points_transformer_test", "fp32"), ("points_transformer_test", "bf16")]
    for r in rows:
        _positive(r["batch"], r["tokens_per_sample"], r["fwd_gflop"], r["fwd_bwd_gflop"], r["fwd_s"], r["fwd_bwd_s"],
                  r["peak_gflops"], r["fwd_gflops"], r["fwd_bwd_gflops"])
        # backward costs about two forwards (less: the stem's input needs no gradient)
        assert 1.5 < r["fwd_bwd_gflop"] / r["fwd_gflop"] < 3.5
        # the rates and ratios follow from the measured numbers
        assert len(r["rounds"]) == 2
        assert r["fwd_bwd_s"] == pytest.approx(sum(x["fwd_bwd_s"] for x in r["rounds"]) / 2, rel=1e-3)
        assert r["fwd_bwd_gflops"] == pytest.approx(r["fwd_bwd_gflop"] / r["fwd_bwd_s"], rel=0.01)
        assert r["fwd_bwd_samples_per_s"] == pytest.approx(r["batch"] / r["fwd_bwd_s"], rel=0.01)
        weighted = sum(x["peak_gflops"] * x["peak_s"] for x in r["rounds"]) / sum(x["peak_s"] for x in r["rounds"])
        assert r["peak_gflops"] == pytest.approx(weighted, rel=0.01)
        assert r["fwd_bwd_pct_peak"] == pytest.approx(100 * r["fwd_bwd_gflops"] / r["peak_gflops"], abs=0.1)
        assert r["fwd_pct_peak"] == pytest.approx(100 * r["fwd_gflops"] / r["peak_gflops"], abs=0.1)
        assert r["best_fwd_bwd_gflops"] >= r["fwd_bwd_gflops"] * 0.999
    assert set(suite["matmul_best_gflops"]) == {"fp32", "bf16"}


def test_encoder_flops_match_the_architecture():
    """Counted forward FLOPs of the image tower = patch conv + trunk (Transformer.flops_per_token) + head."""
    import anybind
    from anybind.bench.encoders import bench_encoder

    enc = anybind.create_encoder("image_vit_test")
    r = bench_encoder("image_vit_test", device=torch.device("cpu"), batch=2, rounds=1, matmul_n=64)
    stem = enc.stem
    patches, tokens = stem.num_patches, stem.num_patches + 1
    conv = 2 * patches * stem.proj.weight[0].numel() * enc.width
    head = 2 * enc.width * enc.embed_dim
    expected = 2 * (conv + tokens * enc.trunk.flops_per_token(tokens) + head)
    assert r["fwd_gflop"] == pytest.approx(expected / 1e9, rel=1e-3)
    assert r["tokens_per_sample"] == tokens


def test_data_suite(tmp_path, workdir):
    report = _run(tmp_path, "data", "--quick", "--sizes", "test", "--modalities", "image,text", "--presets", "world",
                  "--workers", "0,1", "--n", "12", "--workdir", str(workdir), "--sources", "files,shards")
    suite = report["suites"]["data"]
    rows = suite["rows"]
    keys = [(r["modality"], r["source"], r["num_workers"], r["preload"]) for r in rows]
    assert keys == [(m, src, w, False) for m in ("image", "text", "all") for src in ("files", "shards")
                    for w in (0, 1)] + [("all", "files", 0, True)]
    assert suite["shards"]["samples"] == 12 and suite["shards"]["shards"] == 4 and suite["shards"]["bytes"] > 0
    for r in rows:
        _positive(r["samples_per_s"], r["ms_per_sample"], r["samples_timed"])
        assert r["errors"] == 0 and r["samples_timed"] % r["batch_size"] == 0
        if r["source"] == "shards":  # two passes over the 12 samples in one epoch, batches of 4, the first untimed
            assert r["samples_timed"] == 24 - r["batch_size"]
        assert r["ms_per_sample"] == pytest.approx(1000 / r["samples_per_s"], rel=0.02)
    (step,) = suite["steps"]
    assert step["modalities"] == ["image", "text"]
    for r in rows:
        if r["modality"] == "all":
            assert r["step_samples_per_s"] == step["samples_per_s"]
            assert r["loader_over_step"] == pytest.approx(r["samples_per_s"] / step["samples_per_s"], rel=0.01)
        else:
            assert "loader_over_step" not in r
    assert next(r for r in rows if r["preload"])["preload_s"] > 0


def test_train_suite(tmp_path, workdir):
    report = _run(tmp_path, "train", "--quick", "--sizes", "test", "--modalities", "image,text,points",
                  "--presets", "world", "--batch-sizes", "2,3", "--n", "12", "--workdir", str(workdir))
    suite = report["suites"]["train"]
    assert [r["modalities"] for r in suite["bound"]] == [["image", "text"], ["image", "text", "points"]]
    assert [r["batch_size"] for r in suite["batch"]] == [2, 3]
    for r in suite["bound"] + suite["batch"]:
        _positive(r["seconds_per_step"], r["samples_per_s"], r["peak_memory_MiB"], r["params_M"])
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / r["seconds_per_step"], rel=0.01)
        assert set(r["phase_seconds"]) == {"data", "forward", "backward", "optimizer"}
        assert r["gflops"] == pytest.approx(r["step_gflop"] / r["seconds_per_step"], rel=0.01)
        assert sum(r["phase_seconds"].values()) <= r["seconds_per_step"] * 1.05 + 1e-3
    assert suite["bound"][1]["params_M"] > suite["bound"][0]["params_M"]  # one more tower
    assert [r["preload"] for r in suite["breakdown"]] == [True, False]
    for r in suite["breakdown"]:
        _positive(r["seconds_per_step"], r["samples_per_s"], r["peak_memory_MiB"])
        assert 0 <= r["data_wait_share"] <= 1
        assert r["data_wait_share"] == pytest.approx(r["phase_seconds"]["data"] / r["seconds_per_step"], abs=0.002)
        assert r["num_workers"] == (0 if r["preload"] else 2)


def test_train_configuration_in_a_fresh_process():
    from anybind.bench.train import synthetic_step_in_child

    r = synthetic_step_in_child(threads=1, modalities=["image", "audio"], preset="default", model_size="test",
                                batch_size=2, steps=1, warmup=1)
    assert r["threads"] == 1 and r["bound"] == 1 and r["memory_kind"] == "max RSS"
    _positive(r["peak_memory_MiB"], r["samples_per_s"])


def test_trainer_times_phases_only_when_asked():
    from anybind.train.trainer import Trainer

    assert Trainer.lap.__doc__ and Trainer.train_step.__doc__  # the public step API documents itself
    t = Trainer.__new__(Trainer)
    t.phase_times, t.device = None, torch.device("cpu")
    assert t.lap("data", 0.0) is None
    t.phase_times = {}
    mark = t.lap(None, None)
    assert t.phase_times == {}
    t.lap("data", mark - 0.5)
    assert t.phase_times["data"] >= 0.5


def test_retrieval_suite(tmp_path):
    report = _run(tmp_path, "retrieval", "--retrieval-n", "3000", "--kinds", "flat,hnsw", "--quick")
    rows = report["suites"]["retrieval"]["rows"]
    assert [r["kind"] for r in rows] == ["flat", "hnsw"]
    for r in rows:
        assert 0 <= r["recall_at_10"] <= 1 and r["n"] == 3000
        _positive(r["latency_ms_p50"])
    assert rows[0]["recall_at_10"] == 1.0  # exact search


def test_imagebind_suite(tmp_path):
    report = _run(tmp_path, "imagebind", "--quick", "--sizes", "test", "--modalities", "image,text,imu,points")
    rows = report["suites"]["imagebind"]["rows"]
    assert [r["modality"] for r in rows] == ["image", "text", "imu"]  # points has no ImageBind tower
    for r in rows:
        assert r["encoder"].endswith("_test") and r["batch"] == 1
        _positive(r["median_s"], r["min_s"], r["per_sample_ms"])
        assert r["min_s"] <= r["median_s"] and r["params_M"] >= 0


def test_imagebind_suite_reports_reduced_precision_with_its_parity(tmp_path):
    report = _run(tmp_path, "imagebind", "--quick", "--sizes", "test", "--modalities", "image,text",
                  "--precision", "fp32,bf16,int8")
    rows = report["suites"]["imagebind"]["rows"]
    assert [(r["modality"], r["precision"]) for r in rows] == [
        (m, p) for m in ("image", "text") for p in ("fp32", "bf16", "int8")]
    for r in rows:
        if r["precision"] == "fp32":
            assert "min_cosine" not in r
        else:  # compared with the fp32 output of the same input: close, not equal
            assert 0.9 < r["min_cosine"] < 1.0 + 1e-6 and 0 < r["max_abs_err"] < 0.5 and r["speedup"] > 0


def test_command_line_lists_the_suites():
    out = subprocess.run([sys.executable, "-c", "from anybind.bench import main; main(['--help'])"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    for suite in ("encoders", "data", "train", "retrieval", "imagebind", "all"):
        assert suite in out.stdout
    bad = subprocess.run([sys.executable, "-c", "from anybind.bench import main; main(['nosuch'])"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_attention_flops_are_counted_on_every_backend():
    """The fused CPU attention kernel counts as 4 * L^2 * d per head forward and 2.5x that backward."""
    import torch.nn.functional as F

    from anybind.bench.encoders import count_flops

    B, H, L, d = 2, 3, 17, 8
    q = torch.randn(B, H, L, d, requires_grad=True)
    fwd = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert fwd == 4 * B * H * L * L * d
    both = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both == fwd + 10 * B * H * L * L * d


def test_accum_steps_give_the_big_batch_loss_and_the_suite_reports_ratios(tmp_path):
    from anybind.bench.accum import accum_step, micro_batches

    common = dict(batch_size=4, modalities=["image", "text"], preset="default", model_size="test", steps=1)
    one, two = accum_step(accum_steps=1, **common), accum_step(accum_steps=2, **common)
    assert (one["micro_batch"], two["micro_batch"]) == (4, 2) and one["batch_size"] == two["batch_size"] == 4
    assert two["first_loss"] == pytest.approx(one["first_loss"], abs=1e-5)  # K micro-batches of the same rows
    assert one["memory_kind"] == "max RSS" and one["step_peak_MiB"] <= one["peak_memory_MiB"]
    with pytest.raises(ValueError, match="not a multiple of accum_steps=3"):
        micro_batches({"image": torch.zeros(4, 3)}, 3)

    report = _run(tmp_path, "accum", "--quick", "--sizes", "test", "--presets", "default", "--modalities", "image,text")
    suite = report["suites"]["accum"]
    same, micro = suite["same_effective"], suite["same_micro"]
    assert [(r["accum_steps"], r["micro_batch"], r["batch_size"]) for r in same] == [(1, 4, 4), (2, 2, 4)]
    assert [(r["accum_steps"], r["micro_batch"], r["batch_size"]) for r in micro] == [(1, 2, 2), (2, 2, 4)]
    for r in same + micro:
        _positive(r["seconds_per_step"], r["samples_per_s"], r["peak_memory_MiB"])
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / r["seconds_per_step"], rel=0.01)
    assert same[0]["time_vs_accum1"] == 1.0
    assert same[1]["time_vs_accum1"] == pytest.approx(same[1]["seconds_per_step"] / same[0]["seconds_per_step"], rel=0.01)
