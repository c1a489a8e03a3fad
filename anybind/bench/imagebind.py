"""Benchmark ImageBind-size towers on this machine: embedding latency per modality and the peak memory of loading a
huge-size ImageBind checkpoint.

    .venv/bin/python tools/bench_imagebind.py                       # latency + load memory (a few minutes)
    .venv/bin/python tools/bench_imagebind.py --skip-load --repeats 3
    .venv/bin/python tools/bench_imagebind.py --skip-latency --convert   # also: convert + anybind.load peaks
    anybind-bench imagebind                                         # the latency part, inside the bench suite
    .venv/bin/python tools/bench_imagebind.py --imagebind-src PATH --preprocess --skip-towers --skip-load \
        --skip-latency                                              # ImageBind's data.py against anybind's

Latency: each ``imagebind_*_huge`` tower is built on the CPU with random weights and run on inputs of the shapes
ImageBind's preprocessing produces (video: 5 clips x 3 crops of 2 frames); the median of ``--repeats`` timed
forwards after one warm-up is reported (and the fastest: on a shared machine it is the less disturbed figure). Memory: a random huge-size state dict with ImageBind's keys (~4.8 GB) is
written to ``--tmp``, then each way of loading it runs in a fresh process that reports its peak resident set size
(``ru_maxrss``); the file is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import autocast, parity, sig
from .imagebind_inputs import HUGE_TOWERS, sample_input, towers  # noqa: F401 - the suite's names


PRECISIONS = ("fp32", "bf16", "int8")


def _runner(enc: torch.nn.Module, precision: str, device: torch.device):
    """``fn(x) -> output`` of ``enc`` at ``precision``: float32, bf16 autocast, or a dynamic-int8 copy (CPU)."""
    if precision == "fp32":
        return enc
    if precision == "bf16":
        def bf16(x):
            with autocast(device, "bf16"):
                return enc(x).float()
        return bf16
    if precision == "int8":
        from ..quantize import quantize_dynamic_int8

        return quantize_dynamic_int8(enc)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def bench_latency(modalities: list[str], batches: list[int], repeats: int, video_batches: list[int],
                  size: str = "huge", device: torch.device | None = None,
                  precisions: list[str] | tuple[str, ...] = ("fp32",)) -> list[dict]:
    """Median / fastest forward per tower, batch and precision; rows other than fp32 carry their parity error
    against the float32 output of the same input (``parity``) and their speed-up over it."""
    import anybind

    from .common import load, sync

    device = device or torch.device("cpu")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"precisions must be among {PRECISIONS}, got {bad}")
    if "int8" in precisions and device.type != "cpu":
        raise ValueError("int8 (dynamic quantization) is a CPU precision; drop it with --device cuda")
    order = ["fp32"] + [p for p in precisions if p != "fp32"]  # the reference output first
    names = towers(size)
    rows = []
    for m in modalities:
        t0 = time.perf_counter()
        enc = anybind.create_encoder(names[m]).eval().to(device)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in enc.parameters())
        runners = {p: _runner(enc, p, device) for p in order}
        for b in (video_batches if m == "video" else batches):
            x = sample_input(m, enc.input_contract, b).to(device)
            ref, fp32_s = None, None
            for prec in order:
                fn = runners[prec]
                with torch.inference_mode():
                    out = fn(x)  # warm-up (and the output compared with float32)
                    times = []
                    for _ in range(repeats):
                        sync(device)
                        t0 = time.perf_counter()
                        fn(x)
                        sync(device)
                        times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                row = {"modality": m, "encoder": names[m], "params_M": round(params / 1e6, 1), "batch": b,
                       "precision": prec, "input": list(x.shape[1:]), "median_s": sig(med), "min_s": sig(min(times)),
                       "per_sample_ms": sig(1000 * med / b), "repeats": repeats, "build_s": round(build_s, 1),
                       "load": load()}
                if prec == "fp32":
                    ref, fp32_s = out.detach().cpu(), med
                else:
                    row.update(parity(ref, out.detach().cpu()), speedup=sig(fp32_s / med))
                if prec in precisions:
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        del enc, runners
    return rows


# ------------------------------------------------------------------------------------------------ memory
def write_random_huge_checkpoint(path: Path) -> int:
    """A random state dict with the keys and shapes of imagebind_huge.pth; returns its size in bytes."""
    import anybind
    from anybind.compat.imagebind import to_imagebind_state_dict

    towers = {}
    g = torch.Generator().manual_seed(0)
    for m, name in HUGE_TOWERS.items():
        if m == "video":
            continue
        with torch.device("meta"):
            tower = anybind.create_encoder(name)
        tower.to_empty(device="cpu")
        with torch.no_grad():
            for t in list(tower.parameters()) + [b for b in tower.buffers() if b is not None]:
                t.normal_(0.0, 0.02, generator=g)
            if getattr(tower, "log_logit_scale", None) is not None:
                tower.log_logit_scale.fill_(2.0)
        towers[m] = tower
    torch.save(to_imagebind_state_dict(towers), path)
    return path.stat().st_size


def _measure(mode: str, path: str, work: str) -> None:
    """Child process: load ``path`` one way, report peak RSS (and after one forward per modality)."""
    import anybind
    from anybind.compat.imagebind import load_imagebind

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def hwm_mb() -> float | None:  # this process image's own peak (ru_maxrss also keeps a parent's, across exec)
        status = Path("/proc/self/status")
        if not status.exists():
            return None
        line = next((l for l in status.read_text().splitlines() if l.startswith("VmHWM:")), None)
        return round(int(line.split()[1]) / 1024) if line else None

    if mode == "write":
        t0 = time.perf_counter()
        size = write_random_huge_checkpoint(Path(path))
        print(json.dumps({"checkpoint_bytes": size, "checkpoint_gb": round(size / 1e9, 2),
                          "write_s": round(time.perf_counter() - t0, 1)}), flush=True)
        return
    report = {"mode": mode, "baseline_mb": round(peak_mb())}
    t0 = time.perf_counter()
    if mode == "load_imagebind_mmap":
        model = load_imagebind(path)
    elif mode == "load_imagebind_no_mmap":
        model = load_imagebind(path, mmap=False)
    elif mode == "torch_load_no_mmap":
        model = None
        state = torch.load(path, map_location="cpu", weights_only=True)
        report["tensors"] = len(state)
    elif mode == "convert":
        from anybind.compat.convert import convert_imagebind

        convert_imagebind(path, Path(work) / "converted")
        model = None
    elif mode == "anybind_load_converted":
        model = anybind.load(Path(work) / "converted")
    elif mode == "anybind_load_converted_mmap":
        model = anybind.load(Path(work) / "converted", mmap=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["peak_after_load_mb"] = round(peak_mb())
    report["vmhwm_after_load_mb"] = hwm_mb()
    if model is not None:
        with torch.inference_mode():
            for m, tower in model.encoders.items():
                if m != "video":
                    tower(sample_input(m, tower.input_contract, 1))
        report["peak_after_one_forward_per_modality_mb"] = round(peak_mb())
        report["vmhwm_after_one_forward_per_modality_mb"] = hwm_mb()
    print(json.dumps(report), flush=True)


def _warm_page_cache(path: Path, chunk: int = 8 << 20) -> float:
    """Read ``path`` once (into the kernel's page cache; this process keeps one chunk); -> seconds taken."""
    t0 = time.perf_counter()
    buf = bytearray(chunk)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return round(time.perf_counter() - t0, 1)


def bench_load_memory(tmp: Path, convert: bool) -> list[dict]:
    """Every step runs in a child process started by this (still small) one: ru_maxrss carries a parent's peak
    over into its children, so this process must not have held large tensors itself."""
    if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 2 * 2**20:
        print("warning: this process already peaked above 2 GiB; its children's ru_maxrss start from that",
              file=sys.stderr)
    tmp.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(tmp).free
    need = (10 if convert else 5.5) * 2**30
    if free < need:
        raise SystemExit(f"only {free / 2**30:.1f} GiB free under {tmp}; the benchmark needs {need / 2**30:.1f} GiB")
    path = tmp / "anybind_bench_imagebind_huge.pth"
    rows = []

    def child(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "anybind.bench.imagebind", "--_measure", mode, str(path), str(tmp)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    try:
        written = child("write")
        print(json.dumps(written), flush=True)
        size = written["checkpoint_bytes"]
        modes = ["load_imagebind_mmap", "load_imagebind_no_mmap", "torch_load_no_mmap"]
        if convert:
            modes += ["convert", "anybind_load_converted", "anybind_load_converted_mmap"]
        for mode in modes:
            # every timed load finds its file in the page cache: a file just written can be partly evicted by the
            # writer's own memory, and a read from disk would time the disk (cold reads: docs/benchmarks.md)
            warm_s = _warm_page_cache(tmp / "converted.safetensors" if mode.startswith("anybind_load") else path)
            row = child(mode)
            row["warm_read_s"] = warm_s
            row["checkpoint_gb"] = round(size / 1e9, 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        path.unlink(missing_ok=True)
        for suffix in (".safetensors", ".json"):
            (tmp / f"converted{suffix}").unlink(missing_ok=True)
    return rows


LATENCY_COLUMNS = [("encoder", "tower"), ("params_M", "params M"), ("input", "input per sample"), ("batch", "batch"),
                   ("precision", "precision"), ("median_s", "median s"), ("min_s", "fastest s"),
                   ("per_sample_ms", "per sample ms"), ("speedup", "x fp32"), ("max_abs_err", "max abs err"),
                   ("min_cosine", "min cosine"), ("repeats", "repeats"), ("load", "load")]


def run_suite(*, size: str = "huge", modalities: list[str] | None = None, batches=(1, 8), video_batches=(1,),
              repeats: int = 2, device: torch.device | None = None, precisions=("fp32",)) -> dict:
    """The latency part, for ``anybind-bench imagebind`` (load memory needs a 5 GB file: run this module for it)."""
    rows = bench_latency(list(modalities or HUGE_TOWERS), list(batches), repeats, list(video_batches), size=size,
                         device=device, precisions=list(precisions))
    return {"size": size, "rows": rows, "columns": LATENCY_COLUMNS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modalities", nargs="*", default=list(HUGE_TOWERS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--video-batches", nargs="*", type=int, default=[1], help="video: 15 clips per sample")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16 (autocast), int8 (dynamic, "
                        "Linear layers); each row other than fp32 reports its parity error against fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--convert", action="store_true", help="also measure conversion and anybind.load peaks")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--imagebind-src", type=Path, help="a local checkout of ImageBind's repository: time its own "
                        "code against anybind on the same random weights (anybind.bench.imagebind_ref)")
    parser.add_argument("--rounds", type=int, default=3, help="--imagebind-src: interleaved fresh-process pairs")
    parser.add_argument("--preprocess", action="store_true", help="--imagebind-src: also time ImageBind's data.py "
                        "against anybind's ImageBind-parity preprocessing on the same files "
                        "(anybind.bench.imagebind_preprocess)")
    parser.add_argument("--skip-towers", action="store_true", help="--imagebind-src: no tower comparison")
    parser.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        _measure(*args._measure)
        return
    torch.set_num_threads(args.threads)
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
           "torch": torch.__version__, "python": platform.python_version()}
    print(json.dumps(env), flush=True)
    results = {"environment": env}
    if not args.skip_load:  # first, while this process is small (see bench_load_memory)
        results["load_memory"] = bench_load_memory(args.tmp, args.convert)
    if args.imagebind_src:
        from .imagebind_ref import compare, import_imagebind

        import_imagebind(args.imagebind_src)  # a clear error before anything runs
        mods = [m for m in args.modalities if m in ("image", "text", "audio", "video", "depth", "thermal", "imu")]
        if not args.skip_towers:
            results["against_imagebind"] = compare(args.imagebind_src, args.tmp / "anybind_vs_imagebind", mods,
                                                   args.batches, rounds=args.rounds, repeats=args.repeats,
                                                   threads=args.threads)
        if args.preprocess:
            from ..data.digits import default_data_dir
            from . import imagebind_preprocess as pre

            work = args.tmp / "anybind_vs_imagebind_preprocess"
            pre.prepare_inputs(work, default_data_dir())
            results["preprocess_against_imagebind"] = pre.compare(args.imagebind_src, work, rounds=args.rounds)
    if not args.skip_latency:
        results["latency"] = bench_latency(args.modalities, args.batches, args.repeats, args.video_batches,
                                           precisions=[p.strip() for p in args.precisions.split(",") if p.strip()])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
