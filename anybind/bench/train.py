"""Training throughput: samples/s, peak memory and where a step's time goes.

Three measurements, all through the trainer's own step (forward, InfoNCE over the pairs, backward, clipping,
AdamW, schedule) with the towers of the shipped configs (``conf/modality/*.yaml`` at ``model_size``;
``--preset world`` adds the ``experiment=world`` input sizes):

* **bound**: image + the first k modalities of ``order`` (k = 1..4) on synthetic batches of each tower's input
  contract, each configuration in a fresh process so that its peak memory is its own;
* **batch**: the same, all modalities bound, as the batch size grows;
* **breakdown**: real training on a generated world (files -> DataLoader -> step), with the trainer's phase
  timer on: seconds per step spent waiting for data, in forward, in backward and in the optimizer; with the
  world preset's ``data.preload`` on and off.

Peak memory is the max resident set size on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on GPU.
Samples/s counts rows of the batch; each row carries every bound modality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from .common import PRECISIONS, load, peak_memory_mib, reset_peak_memory, sig, synthetic_input

ORDER = ("text", "audio", "video", "points")


class _Repeat:
    """An endless stream of one batch (the trainer's step only needs ``next``)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def preset_overrides(preset: str, modalities: list[str], model_size: str) -> list[str]:
    if preset not in ("default", "world"):
        raise ValueError(f"preset must be 'default' or 'world', got {preset!r}")
    out = [f"modality=[{','.join(modalities)}]", f"model_size={model_size}"]
    if preset == "world":
        out.insert(0, "experiment=world")
    return out


def bench_trainer(module, optimizer, scheduler, device, precision: str, *, loader=None, sampler=None, clip=1.0,
                  accum_steps: int = 1):
    """A :class:`~anybind.train.trainer.Trainer` that logs nothing, with its phase timer on."""
    from ..train.trainer import Trainer

    amp = PRECISIONS[precision]
    trainer = Trainer(module=module, optimizer=optimizer, scheduler=scheduler, loader=loader, sampler=sampler,
                      device=device, run_dir=tempfile.mkdtemp(prefix="anybind-bench-"), max_steps=10**9,
                      autocast_dtype=amp, use_scaler=precision == "fp16", clip_grad_norm=clip, tensorboard=False,
                      csv_log=False, progress=False, heatmap=False, accum_steps=accum_steps)
    trainer.phase_times = {}
    return trainer


def timed_steps(trainer, batches, steps: int) -> tuple[float, dict[str, float]]:
    """``steps`` optimizer steps through :meth:`Trainer.train_step` with the phase timer on; -> (seconds per step,
    seconds per step of each phase)."""
    trainer.phase_times = {}
    t0 = time.perf_counter()
    for _ in range(steps):
        out = trainer.train_step(batches)
    float(out["loss"])  # the last step's work is done
    dt = (time.perf_counter() - t0) / steps
    return dt, {k: sig(v / steps) for k, v in trainer.phase_times.items()}


def synthetic_step(*, modalities: list[str], preset: str = "default", model_size: str = "tiny", batch_size: int = 16,
                   steps: int = 5, warmup: int = 2, device: str = "cpu", precision: str = "fp32",
                   grad_checkpointing: bool = False, compile: bool = False) -> dict:
    """Training steps on one synthetic batch; -> samples/s, seconds per phase, peak memory of this process."""
    from ..train.builders import build_loss, build_model, resolve_pairs
    from ..train.module import TrainModule
    from ..train.optim import WarmupCosine, build_optimizer
    from ..train.recipe import compose_train_config

    dev = torch.device(device)
    cfg = compose_train_config(preset_overrides(preset, modalities, model_size) + ["data.manifest=unused"])
    torch.manual_seed(0)
    model = build_model(cfg)
    pairs = resolve_pairs(modalities, "image", [], [])
    module = TrainModule(model, build_loss(cfg, pairs)).to(dev)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if compile:
        for enc in model.encoders.values():
            enc.compile(dynamic=True)
    opt = build_optimizer(module, lr=1e-4, weight_decay=0.05, fused=True if dev.type == "cuda" else None)
    sched = WarmupCosine(opt, total_steps=1000, warmup_steps=10)
    g = torch.Generator().manual_seed(0)
    B = batch_size
    batch = {"inputs": {m: synthetic_input(m, model.input_contract(m), B, g) for m in modalities},
             "valid": {m: torch.ones(B, dtype=torch.bool) for m in modalities}, "ids": [str(i) for i in range(B)],
             "errors": []}
    trainer = bench_trainer(module, opt, sched, dev, precision)
    stream = _Repeat(batch)
    reset_peak_memory(dev)
    for _ in range(warmup):
        trainer.train_step(stream)
    from .encoders import count_flops

    step_flops = count_flops(lambda: trainer.train_step(stream))  # one more warm-up step, its FLOPs counted
    dt, phases = timed_steps(trainer, stream, steps)
    peak, kind = peak_memory_mib(dev)
    return {"preset": preset, "modalities": modalities, "bound": len(modalities) - 1, "batch_size": B,
            "model_size": model_size, "precision": precision,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps": steps,
            "seconds_per_step": sig(dt), "samples_per_s": sig(B / dt), "phase_seconds": phases,
            "step_gflop": sig(step_flops / 1e9), "gflops": sig(step_flops / dt / 1e9),
            "peak_memory_MiB": round(peak, 1), "memory_kind": kind, "threads": torch.get_num_threads(),
            "load": load()}


def synthetic_step_in_child(threads: int | None = None, **kwargs) -> dict:
    """:func:`synthetic_step` in a fresh process (its peak memory is then this configuration's alone)."""
    spec = dict(kwargs, threads=threads)
    out = subprocess.run([sys.executable, "-m", "anybind.bench.train", "--child", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"training benchmark {kwargs} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def scan_bound(*, order=ORDER, fresh_process: bool = True, threads: int | None = None, log=print, **kwargs) -> list[dict]:
    """image + the first k of ``order``, k = 1..len(order)."""
    rows = []
    for k in range(1, len(order) + 1):
        spec = dict(kwargs, modalities=["image", *order[:k]])
        r = synthetic_step_in_child(threads, **spec) if fresh_process else synthetic_step(**spec)
        log(f"bound {r['bound']} ({'+'.join(r['modalities'])}): {r['samples_per_s']} samples/s, "
            f"{r['peak_memory_MiB']} MiB (load {r['load']})")
        rows.append(r)
    return rows


def scan_batch(*, batch_sizes, modalities, fresh_process: bool = True, threads: int | None = None, log=print,
               **kwargs) -> list[dict]:
    rows = []
    for b in batch_sizes:
        spec = dict(kwargs, modalities=list(modalities), batch_size=b)
        r = synthetic_step_in_child(threads, **spec) if fresh_process else synthetic_step(**spec)
        log(f"batch {b}: {r['samples_per_s']} samples/s, {r['peak_memory_MiB']} MiB (load {r['load']})")
        rows.append(r)
    return rows


def real_data_breakdown(manifest: str, *, preset: str = "world", modalities=("image", *ORDER), model_size: str = "tiny",
                        batch_size: int = 32, preload: bool = True, num_workers: int = 2, steps: int = 10,
                        warmup: int = 2, device: str = "cpu", precision: str = "fp32",
                        threads: int | None = None, compile: bool = False) -> dict:
    """Real training steps (manifest files -> DataLoader -> step) with the phase timer on.

    The process uses the recipe's thread rule (cores minus busy DataLoader workers) unless ``threads`` is given.
    ``data_wait_share`` is the fraction of the step spent waiting for the next batch: 0 means the loader never
    stalls the step.
    """
    from ..train.recipe import build_run, compose_train_config
    from ..train.runtime import default_threads

    dev = torch.device(device)
    overrides = preset_overrides(preset, list(modalities), model_size) + [
        f"data.manifest={manifest}", "data.val_manifest=null", "data.train_split=null",
        f"data.batch_size={batch_size}", f"data.preload={str(preload).lower()}", f"data.num_workers={num_workers}",
        "trainer.progress=false", "eval.enabled=false", f"trainer.compile={str(compile).lower()}"]
    cfg = compose_train_config(overrides)
    torch.set_num_threads(threads or default_threads(dev, 0 if preload else num_workers))
    t0 = time.perf_counter()
    s = build_run(cfg, dev)
    setup_s = time.perf_counter() - t0
    trainer = bench_trainer(s.module, s.optimizer, s.scheduler, dev, precision, loader=s.loader, sampler=s.sampler,
                       clip=cfg.optim.clip_grad_norm)
    batches = trainer.batches()
    for _ in range(warmup):
        trainer.train_step(batches)
    dt, phases = timed_steps(trainer, batches, steps)
    peak, kind = peak_memory_mib(dev)
    del batches
    return {"preset": preset, "modalities": list(modalities), "batch_size": batch_size, "preload": preload,
            "num_workers": 0 if preload else num_workers, "threads": torch.get_num_threads(),
            "setup_s": round(setup_s, 2), "seconds_per_step": sig(dt), "samples_per_s": sig(batch_size / dt),
            "phase_seconds": phases, "data_wait_share": round(trainer.phase_times.get("data", 0.0) / steps / dt, 4),
            "peak_memory_MiB": round(peak, 1), "memory_kind": kind, "steps": steps, "load": load()}


def flatten_phases(rows: list[dict]) -> list[dict]:
    for r in rows:
        for k, v in r.get("phase_seconds", {}).items():
            r[f"{k}_s"] = v
    return rows


SYNTH_COLUMNS = [("preset", "preset"), ("modalities", "modalities"), ("batch_size", "batch"), ("params_M", "params M"),
                 ("seconds_per_step", "s/step"), ("samples_per_s", "samples/s"), ("gflops", "GFLOP/s"),
                 ("forward_s", "forward s"),
                 ("backward_s", "backward s"), ("optimizer_s", "optimizer s"), ("peak_memory_MiB", "peak MiB"),
                 ("load", "load")]
REAL_COLUMNS = [("preset", "preset"), ("preload", "preload"), ("num_workers", "workers"), ("threads", "threads"),
                ("batch_size", "batch"), ("seconds_per_step", "s/step"), ("samples_per_s", "samples/s"),
                ("data_s", "data wait s"), ("forward_s", "forward s"), ("backward_s", "backward s"),
                ("optimizer_s", "optimizer s"), ("data_wait_share", "data share"), ("peak_memory_MiB", "peak MiB"),
                ("load", "load")]


def _child_main(spec: str) -> None:
    kwargs = json.loads(spec)
    threads = kwargs.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    print(json.dumps(synthetic_step(**kwargs)))


def bench_train_main(argv=None) -> None:
    """``tools/bench_train.py``: training samples/s and peak memory as bound modalities are added."""
    p = argparse.ArgumentParser(prog="bench_train", description="Training samples/s and peak memory per number of "
                                "modalities bound to the image anchor (anybind-bench train does this and more).")
    p.add_argument("--preset", choices=["default", "world"], default="default")
    p.add_argument("--model-size", default="tiny")
    p.add_argument("--order", default=",".join(ORDER), help="modalities bound one after another")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    from .common import environment, print_table, write_json

    torch.set_num_threads(a.threads)
    env = environment(torch.device(a.device))
    rows = flatten_phases(scan_bound(order=a.order.split(","), threads=a.threads, preset=a.preset,
                                     model_size=a.model_size, batch_size=a.batch_size, steps=a.steps, warmup=a.warmup,
                                     device=a.device, precision=a.precision,
                                     grad_checkpointing=a.grad_checkpointing))
    print_table("Training vs bound modalities", SYNTH_COLUMNS, rows, env)
    if a.json:
        write_json(a.json, {"environment": env, "results": rows})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        bench_train_main()
