"""Encoder throughput against the machine's own matrix-multiply peak.

For each tower (``{family}_{size}`` of every built-in modality) and precision: forward (inference) and
forward+backward (training, gradients set to ``None`` between steps as the trainer does) on a batch of
synthetic inputs large enough to be compute-bound (``--tokens`` trunk tokens per batch). FLOPs are counted
exactly with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention, taught the
fused CPU attention kernel; elementwise work counts zero, the usual MFU convention), so achieved FLOP/s = counted
FLOPs / seconds.

The peak is a square ``torch.mm`` (``--matmul-n``) in the same precision, on the same threads. On a shared
machine a short burst of products can catch a quiet moment that a long encoder step never sees, so the peak is
*sustained*: products run back to back for as long as one encoder forward+backward takes, immediately before
every timed round of the encoder. Rounds interleave peak and encoder, so both sample the same machine load, and
both figures are totals over all rounds (FLOPs / seconds); the ratio is achieved / peak of those two numbers.
The fastest round is reported too (``best_*``), the figure a quiet machine approaches.
"""

from __future__ import annotations

import gc
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .common import FAMILIES, PRECISIONS, autocast, load, sig, sync, synthetic_input, timed

DEFAULT_TOKENS = {"cpu": 2048, "cuda": 65536}


class MatmulPeak:
    """Square ``(n, n) @ (n, n)`` products in one precision: the compute ceiling the encoders are compared with."""

    def __init__(self, n: int, precision: str, device: torch.device):
        dtype = PRECISIONS[precision] or torch.float32
        g = torch.Generator(device="cpu").manual_seed(0)
        self.n, self.device = n, device
        self.a = torch.randn(n, n, generator=g).to(device, dtype)
        self.b = torch.randn(n, n, generator=g).to(device, dtype)
        self.out = torch.empty(n, n, device=device, dtype=dtype)
        self.flops = 2 * n**3
        self._mm()  # warm-up (library dispatch, page faults)

    def _mm(self):
        torch.mm(self.a, self.b, out=self.out)

    def best(self, repeats: int = 3) -> float:
        """GFLOP/s of the fastest of ``repeats`` products."""
        return self.flops / min(timed(self._mm, self.device) for _ in range(repeats)) / 1e9

    def sustained(self, seconds: float, min_products: int = 2) -> tuple[int, float]:
        """Products run back to back for at least ``seconds``: -> (FLOPs done, seconds taken)."""
        count = 0
        sync(self.device)
        t0 = time.perf_counter()
        while count < min_products or time.perf_counter() - t0 < seconds:
            self._mm()
            count += 1
            if count % 8 == 0:
                sync(self.device)
        sync(self.device)
        return count * self.flops, time.perf_counter() - t0


def matmul_peak(n: int, precision: str, device: torch.device, repeats: int = 3) -> float:
    """GFLOP/s of the fastest of ``repeats`` square products in ``precision``."""
    return MatmulPeak(n, precision, device).best(repeats)


def tokens_per_sample(enc, x1: torch.Tensor) -> int:
    """Trunk tokens one sample makes (all its clips), from the tower's stem."""
    stem = getattr(enc, "stem", None)
    if stem is None:
        return 1
    if enc.input_contract.get("clips"):
        x1 = x1.flatten(0, 1)
    with torch.no_grad():
        t = stem(x1)
    return int(t.shape[0] * t.shape[1])


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# PyTorch's counter knows the CUDA attention kernels but not the fused CPU one, which it would count as zero;
# as for CUDA, causal attention is counted in full (the usual MFU convention).
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def count_flops(fn) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn`` runs (multiply-add = 2)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def bench_encoder(name: str, *, device: torch.device, precision: str = "fp32", batch: int | None = None,
                  tokens: int | None = None, rounds: int = 3, matmul_n: int = 2048, compile: bool = False) -> dict:
    """One tower, one precision: forward and forward+backward throughput and their share of the matmul peak."""
    import anybind

    torch.manual_seed(0)
    enc = anybind.create_encoder(name).to(device)
    m = enc.modality
    x1 = synthetic_input(m, enc.input_contract, 1).to(device)
    per_sample = tokens_per_sample(enc, x1)
    if batch is None:
        batch = max(1, round((tokens or DEFAULT_TOKENS.get(device.type, 2048)) / per_sample))
    x = synthetic_input(m, enc.input_contract, batch).to(device)
    run = torch.compile(enc) if compile else enc

    def forward():
        enc.eval()
        with torch.inference_mode(), autocast(device, precision):
            return run(x)

    def forward_backward():
        enc.train()
        enc.zero_grad(set_to_none=True)
        with autocast(device, precision):
            z = run(x)
        z.float().sum().backward()

    # FLOPs on the eager module (a compiled graph runs the same products)
    enc.eval()
    with torch.inference_mode(), autocast(device, precision):
        fwd_flops = count_flops(lambda: enc(x))
    enc.train()

    def eager_fwd_bwd():
        with autocast(device, precision):
            z = enc(x)
        z.float().sum().backward()

    train_flops = count_flops(eager_fwd_bwd)
    enc.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    forward(), forward_backward()  # warm-up (and compilation)
    step_s = timed(forward_backward, device)  # how long each sustained peak segment runs
    warmup_s = time.perf_counter() - t0
    mm = MatmulPeak(matmul_n, precision, device)
    per_round = []
    for _ in range(rounds):  # peak and encoder back to back, for equal times: both see the same load
        pf, ps = mm.sustained(step_s)
        tf = timed(forward, device)
        tb = timed(forward_backward, device)
        step_s = tb
        per_round.append({"peak_gflops": sig(pf / ps / 1e9), "peak_s": sig(ps), "fwd_s": sig(tf),
                          "fwd_bwd_s": sig(tb), "fwd_bwd_gflops": sig(train_flops / tb / 1e9), "load": load()})
    peak = sum(r["peak_gflops"] * r["peak_s"] for r in per_round) / sum(r["peak_s"] for r in per_round)
    tf = sum(r["fwd_s"] for r in per_round) / rounds
    tb = sum(r["fwd_bwd_s"] for r in per_round) / rounds
    fwd_gflops, train_gflops = fwd_flops / tf / 1e9, train_flops / tb / 1e9
    best = max(per_round, key=lambda r: r["fwd_bwd_gflops"])
    peak = sig(peak)
    row = {
        "modality": m, "encoder": name, "precision": precision, "compiled": compile, "batch": batch,
        "tokens_per_sample": per_sample, "params_M": round(sum(p.numel() for p in enc.parameters()) / 1e6, 2),
        "fwd_gflop": sig(fwd_flops / 1e9), "fwd_bwd_gflop": sig(train_flops / 1e9),
        "fwd_s": sig(tf), "fwd_bwd_s": sig(tb),
        "fwd_samples_per_s": sig(batch / tf), "fwd_bwd_samples_per_s": sig(batch / tb),
        "fwd_gflops": sig(fwd_gflops), "fwd_bwd_gflops": sig(train_gflops),
        "best_fwd_bwd_gflops": best["fwd_bwd_gflops"], "best_round_peak_gflops": best["peak_gflops"],
        "peak_gflops": peak,
        "fwd_pct_peak": round(100 * fwd_gflops / peak, 1), "fwd_bwd_pct_peak": round(100 * train_gflops / peak, 1),
        "warmup_s": round(warmup_s, 2), "rounds": per_round, "load": load(),
    }
    del enc, run, x
    gc.collect()
    return row


COLUMNS = [("encoder", "encoder"), ("precision", "precision"), ("compiled", "compiled"), ("batch", "batch"),
           ("tokens_per_sample", "tokens/sample"), ("fwd_samples_per_s", "fwd samples/s"),
           ("fwd_gflops", "fwd GFLOP/s"), ("fwd_pct_peak", "fwd % peak"),
           ("fwd_bwd_samples_per_s", "fwd+bwd samples/s"), ("fwd_bwd_gflops", "fwd+bwd GFLOP/s"),
           ("fwd_bwd_pct_peak", "fwd+bwd % peak"), ("peak_gflops", "matmul peak GFLOP/s"), ("load", "load")]


def run_suite(*, device: torch.device, sizes: list[str], modalities: list[str], precisions: list[str],
              rounds: int = 3, tokens: int | None = None, batch: int | None = None, matmul_n: int | None = None,
              compile: bool = False, encoders: list[str] | None = None, log=print) -> dict:
    matmul_n = matmul_n or (8192 if device.type == "cuda" else 2048)
    names = encoders or [f"{FAMILIES[m]}_{s}" for s in sizes for m in modalities]
    peaks = {p: sig(matmul_peak(matmul_n, p, device)) for p in precisions}
    log(f"matmul {matmul_n}x{matmul_n} fastest-product GFLOP/s: {peaks} (load {load()})")
    rows = []
    for name in names:
        for p in precisions:
            row = bench_encoder(name, device=device, precision=p, batch=batch, tokens=tokens, rounds=rounds,
                                matmul_n=matmul_n, compile=compile)
            log(f"{name} {p}: fwd+bwd {row['fwd_bwd_gflops']} GFLOP/s = {row['fwd_bwd_pct_peak']}% of "
                f"{row['peak_gflops']} (batch {row['batch']}, load {row['load']})")
            rows.append(row)
    sustained = {p: [r["peak_gflops"] for r in rows if r["precision"] == p] for p in precisions}
    return {"matmul_n": matmul_n, "matmul_best_gflops": peaks,
            "matmul_sustained_gflops": {p: (sig(sum(v) / len(v)) if v else None) for p, v in sustained.items()},
            "rows": rows, "columns": COLUMNS}
