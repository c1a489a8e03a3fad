"""Training throughput and peak memory, as the number of modalities bound to the image anchor grows.

Each configuration (image + the first k of ``--order``, k = 1..4) runs in a fresh subprocess so its peak memory is
its own: the towers come from the shipped configs (``conf/modality/*.yaml`` at ``model_size``, plus the
``experiment=world`` input sizes with ``--preset world``), batches are synthetic tensors of each tower's input
contract (decoding is measured elsewhere), and steps go through the trainer's own step (forward, InfoNCE over the
pairs, backward, clipping, AdamW, schedule).

    python tools/bench_train.py                       # default tiny configuration, batch 16
    python tools/bench_train.py --preset world --batch-size 32 --json out.json

Reports samples/s (rows of the batch per second; each row carries every bound modality), seconds per step, and
peak memory (max RSS on CPU; torch.cuda.max_memory_allocated on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ORDER = ("text", "audio", "video", "points")


def synthetic_sample(modality: str, contract: dict, batch: int, g):
    import torch

    c = contract
    if modality == "text":
        ids = torch.randint(1, 49406, (batch, c["context_length"]), generator=g)
        ids[:, 0], ids[:, 12], ids[:, 13:] = 49406, 49407, 0
        return ids
    shape = {
        "image": (3, c.get("image_size", 224), c.get("image_size", 224)),
        "audio": (c.get("clips", 1), 1, c.get("num_mel_bins", 128), c.get("target_length", 204)),
        "video": (c.get("clips", 1), 3, c.get("frames", 2), c.get("image_size", 224), c.get("image_size", 224)),
        "points": (c.get("num_points", 1024), c.get("channels", 3)),
    }[modality]
    return torch.randn((batch, *shape), generator=g)


class _Batches:
    """An endless stream of one synthetic batch (the trainer's step only needs ``next``)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def child(args) -> dict:
    import torch

    from anybind.train.recipe import build_loss, build_model, compose_train_config, resolve_pairs
    from anybind.train.optim import WarmupCosine, build_optimizer
    from anybind.train.trainer import Trainer, TrainModule

    torch.set_num_threads(args.threads)
    mods = ["image", *args.modalities.split(",")]
    overrides = [f"modality=[{','.join(mods)}]", f"model_size={args.model_size}", "data.manifest=unused"]
    if args.preset == "world":
        overrides.append("experiment=world")
    cfg = compose_train_config(overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    pairs = resolve_pairs(mods, "image", [], [])
    device = torch.device(args.device)
    module = TrainModule(model, build_loss(cfg, pairs)).to(device)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    opt = build_optimizer(module, lr=1e-4, weight_decay=0.05, fused=True if device.type == "cuda" else None)
    sched = WarmupCosine(opt, total_steps=1000, warmup_steps=10)
    g = torch.Generator().manual_seed(0)
    B = args.batch_size
    batch = {"inputs": {m: synthetic_sample(m, model.input_contract(m), B, g) for m in mods},
             "valid": {m: torch.ones(B, dtype=torch.bool) for m in mods}, "ids": [str(i) for i in range(B)],
             "errors": []}
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    trainer = Trainer(module=module, optimizer=opt, scheduler=sched, loader=None, sampler=None, device=device,
                      run_dir="/tmp/anybind-bench-train", max_steps=10**9, autocast_dtype=amp,
                      use_scaler=args.precision == "fp16", tensorboard=False, csv_log=False, progress=False)
    stream = _Batches(batch)
    for _ in range(args.warmup):
        trainer._train_step(stream)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        out = trainer._train_step(stream)
    float(out["loss"])  # waits for the device
    dt = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in model.parameters())
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"modalities": mods, "bound": len(mods) - 1, "batch_size": B, "params_M": round(params / 1e6, 2),
            "seconds_per_step": round(dt, 4), "samples_per_s": round(B / dt, 2), "peak_memory_MiB": round(peak, 1),
            "memory_kind": "cuda max allocated" if device.type == "cuda" else "max RSS"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["default", "world"], default="default",
                   help="default: the conf/modality towers at their own input sizes; world: experiment=world sizes")
    p.add_argument("--model-size", default="tiny")
    p.add_argument("--order", default=",".join(ORDER), help="modalities bound one after another")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--modalities", help=argparse.SUPPRESS)  # child mode
    args = p.parse_args()
    if args.modalities:
        print(json.dumps(child(args)))
        return
    order = args.order.split(",")
    rows = []
    print(f"{'bound':>5} {'modalities':<34} {'params M':>8} {'s/step':>8} {'samples/s':>10} {'peak MiB':>9}")
    for k in range(1, len(order) + 1):
        cmd = [sys.executable, __file__, "--modalities", ",".join(order[:k]), "--preset", args.preset,
               "--model-size", args.model_size, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device,
               "--precision", args.precision] + (["--grad-checkpointing"] if args.grad_checkpointing else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"configuration {order[:k]} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['bound']:>5} {'+'.join(r['modalities']):<34} {r['params_M']:>8} {r['seconds_per_step']:>8} "
              f"{r['samples_per_s']:>10} {r['peak_memory_MiB']:>9}")
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": args.threads, "device": args.device, "preset": args.preset,
            "precision": args.precision, "date": time.strftime("%Y-%m-%d")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
    print(json.dumps(meta))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
