"""Cached-negative accumulation (``trainer.accum_steps=K``): peak memory and step time against K.

Two scans, each configuration in a fresh process (so that its peak memory is its own), through the trainer's own
step (:meth:`~anybind.train.trainer.Trainer.train_step`: the K micro-batches, the big batch's loss on cached
embeddings, the second forward with autograd, clipping, AdamW) on synthetic batches of each tower's input contract:

* **same effective batch**: E rows per optimizer step as K micro-batches of E / K (K = 1 is one plain batch of
  E). Memory falls with K (activations of E / K rows); the time ratio to K = 1 is the accumulation's overhead
  (one extra forward without autograd per micro-batch, plus whatever small batches lose in efficiency);
* **same micro-batch**: B rows per micro-batch, K x B rows per step. Memory stays flat as K (and the effective
  batch) grows: what accumulation is for.

Peak memory: the process's max resident set size (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated``
on GPU. ``step_peak_MiB`` is the CPU peak minus the resident size just before the first step (model, optimizer and
inputs built), i.e. what the steps themselves added: activations, gradients, AdamW's state (the same for every
K) and the allocator's slack.

    anybind-bench accum [--presets world] [--sizes small] [--modalities image,text,audio] [--batch 256]
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from .common import load, peak_memory_mib, reset_peak_memory, sig, synthetic_input
from .train import bench_trainer, preset_overrides, timed_steps

ACCUM = (1, 4, 16)
DEFAULT_MODALITIES = ("image", "text", "audio")


def _resident_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Cycle:
    """The micro-batches of one big batch, again and again (a step takes ``accum_steps`` of them)."""

    def __init__(self, batches):
        self.batches, self.i = list(batches), 0

    def __iter__(self):
        return self

    def __next__(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


def micro_batches(inputs: dict[str, torch.Tensor], k: int) -> list[dict]:
    """One big batch of synthetic inputs, cut into ``k`` loader-shaped micro-batches of equal size."""
    n = len(next(iter(inputs.values())))
    if n % k:
        raise ValueError(f"the effective batch {n} is not a multiple of accum_steps={k}")
    b = n // k
    out = []
    for j in range(k):
        part = {m: x[j * b:(j + 1) * b] for m, x in inputs.items()}
        out.append({"inputs": part, "valid": {m: torch.ones(b, dtype=torch.bool) for m in part},
                    "ids": [str(j * b + i) for i in range(b)], "errors": []})
    return out


def accum_step(*, accum_steps: int, batch_size: int, modalities=DEFAULT_MODALITIES, preset: str = "world",
               model_size: str = "tiny", steps: int = 3, warmup: int = 1, device: str = "cpu",
               precision: str = "fp32") -> dict:
    """Optimizer steps over ``batch_size`` rows as ``accum_steps`` micro-batches; -> time, memory, first loss."""
    from ..train.builders import build_loss, build_model, resolve_pairs
    from ..train.module import TrainModule
    from ..train.optim import WarmupCosine, build_optimizer
    from ..train.recipe import compose_train_config

    dev = torch.device(device)
    modalities = list(modalities)
    cfg = compose_train_config(preset_overrides(preset, modalities, model_size) + ["data.manifest=unused"])
    torch.manual_seed(0)
    model = build_model(cfg)
    module = TrainModule(model, build_loss(cfg, resolve_pairs(modalities, "image", [], []))).to(dev)
    opt = build_optimizer(module, lr=1e-4, weight_decay=0.05, fused=True if dev.type == "cuda" else None)
    sched = WarmupCosine(opt, total_steps=1000, warmup_steps=10)
    g = torch.Generator().manual_seed(0)
    big = {m: synthetic_input(m, model.input_contract(m), batch_size, g) for m in modalities}
    stream = _Cycle(micro_batches(big, accum_steps))
    trainer = bench_trainer(module, opt, sched, dev, precision, accum_steps=accum_steps)
    before = _resident_mib()
    reset_peak_memory(dev)
    first = float(trainer.train_step(stream)["loss"])
    for _ in range(max(0, warmup - 1)):
        trainer.train_step(stream)
    dt, phases = timed_steps(trainer, stream, steps)
    peak, kind = peak_memory_mib(dev)
    return {"preset": preset, "model_size": model_size, "modalities": modalities, "accum_steps": accum_steps,
            "batch_size": batch_size, "micro_batch": batch_size // accum_steps, "precision": precision,
            "steps": steps, "seconds_per_step": sig(dt), "samples_per_s": sig(batch_size / dt),
            "phase_seconds": phases, "first_loss": first, "peak_memory_MiB": round(peak, 1), "memory_kind": kind,
            "resident_before_MiB": round(before, 1),
            "step_peak_MiB": round(peak - before, 1) if dev.type == "cpu" else None,
            "threads": torch.get_num_threads(), "load": load()}


def accum_step_in_child(threads: int | None = None, **kwargs) -> dict:
    """:func:`accum_step` in a fresh process (its peak memory is then this configuration's alone)."""
    spec = dict(kwargs, threads=threads)
    out = subprocess.run([sys.executable, "-m", "anybind.bench.accum", "--child", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"accumulation benchmark {kwargs} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_suite(*, batch_size: int = 256, accum=ACCUM, fresh_process: bool = True, threads: int | None = None,
              repeats: int = 1, log=print, **kwargs) -> dict:
    """Both scans (module docstring); ``repeats`` > 1 keeps each configuration's median step time."""
    def measure(k: int, effective: int, scan: str) -> dict:
        runs = []
        for _ in range(max(1, repeats)):
            spec = dict(kwargs, accum_steps=k, batch_size=effective)
            runs.append(accum_step_in_child(threads, **spec) if fresh_process else accum_step(**spec))
        runs.sort(key=lambda r: r["seconds_per_step"])
        r = dict(runs[len(runs) // 2], scan=scan, repeats=len(runs),
                 seconds_per_step_all=[x["seconds_per_step"] for x in runs],
                 loads=[x["load"] for x in runs], peak_memory_MiB=max(x["peak_memory_MiB"] for x in runs))
        log(f"[{scan}] accum_steps={k}, {effective} rows ({r['micro_batch']} per micro-batch): "
            f"{r['seconds_per_step']} s/step, peak {r['peak_memory_MiB']} MiB (+{r['step_peak_MiB']} MiB in the steps), "
            f"load {r['loads']}")
        return r

    same_effective = [measure(k, batch_size, "same effective batch") for k in accum]
    micro = batch_size // max(accum)
    same_micro = [measure(k, micro * k, "same micro-batch") for k in accum]
    base = same_effective[0]["seconds_per_step"]
    for r in same_effective:
        r["time_vs_accum1"] = sig(r["seconds_per_step"] / base, 3)
        r["memory_vs_accum1"] = sig(r["peak_memory_MiB"] / same_effective[0]["peak_memory_MiB"], 3)
    for r in same_micro:
        r["memory_vs_accum1"] = sig(r["peak_memory_MiB"] / same_micro[0]["peak_memory_MiB"], 3)
    return {"same_effective": same_effective, "same_micro": same_micro,
            "tables": [(f"Accumulation, same effective batch ({batch_size} rows per step)", COLUMNS, "same_effective"),
                       (f"Accumulation, same micro-batch ({micro} rows)", COLUMNS, "same_micro")]}


COLUMNS = [("preset", "preset"), ("model_size", "size"), ("modalities", "modalities"), ("accum_steps", "accum_steps"),
           ("micro_batch", "micro-batch"), ("batch_size", "rows/step"), ("seconds_per_step", "s/step"),
           ("seconds_per_step_all", "s/step (runs)"), ("time_vs_accum1", "time vs K=1"),
           ("peak_memory_MiB", "peak MiB"), ("step_peak_MiB", "added by steps MiB"),
           ("memory_vs_accum1", "peak vs K=1"), ("loads", "load")]


def _child_main(spec: str) -> None:
    kwargs = json.loads(spec)
    threads = kwargs.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    print(json.dumps(accum_step(**kwargs)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        raise SystemExit("run it as: anybind-bench accum (see anybind/bench/accum.py)")
