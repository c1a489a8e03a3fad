"""``anybind-bench``: how close each stage of anybind runs to what this machine allows.

    anybind-bench encoders                 # fwd / fwd+bwd throughput vs the matmul peak (fp32, bf16), small towers
    anybind-bench data                     # files -> batches per modality, 0 / 1 / N workers, vs the training step
    anybind-bench train                    # samples/s + peak memory vs bound modalities and batch; step breakdown
    anybind-bench accum                    # trainer.accum_steps 1 / 4 / 16: peak memory and step time
    anybind-bench retrieval                # index build / latency / recall on a small collection
    anybind-bench imagebind                # ImageBind huge-size latency per modality, batch 1 and 8
    anybind-bench all --quick --json bench.json

Every suite prints Markdown tables (machine, date, load average, command above each) and, with ``--json``,
writes everything measured. ``--device cuda`` runs on a GPU (timings synchronize the device; ``--precision
bf16`` autocasts; ``--compile`` wraps the towers in ``torch.compile``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import MODALITIES, environment, parse_list, print_table, resolve_device, write_json

SUITES = ("encoders", "data", "train", "accum", "retrieval", "imagebind")


def _parser() -> argparse.ArgumentParser:
    from ..cli import ArgumentParser  # one-line errors, --debug

    p = ArgumentParser(prog="anybind-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("suite", choices=[*SUITES, "all"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    p.add_argument("--sizes", help="encoders: tower sizes (default small); data/train: the model_size of the "
                   "training towers (default tiny); imagebind: huge (default) or test")
    p.add_argument("--modalities", help=f"comma list (default {','.join(MODALITIES)})")
    p.add_argument("--precision", help="encoders: fp32,bf16 (default both); train: fp32 (default), bf16 or fp16; "
                   "imagebind: any of fp32,bf16,int8 (default fp32; the others with their parity error against fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the towers (encoders, train)")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--markdown", help="also append the printed tables to this file")
    p.add_argument("--quick", action="store_true", help="short runs (one round, small batches and collections)")
    g = p.add_argument_group("encoders")
    g.add_argument("--rounds", type=int, help="interleaved peak/encoder rounds (default 3; quick 1)")
    g.add_argument("--tokens", type=int, help="trunk tokens per batch, which sets each tower's batch "
                   "(default 2048 on CPU, 65536 on CUDA)")
    g.add_argument("--batch", type=int, help="a fixed batch for every tower instead of --tokens")
    g.add_argument("--matmul-n", type=int, help="side of the square peak product (default 2048; CUDA 8192)")
    g.add_argument("--encoders", help="registry names to run instead of --sizes x --modalities")
    g = p.add_argument_group("data and train")
    g.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "anybind-bench"),
                   help="where the generated world is cached")
    g.add_argument("--n", type=int, help="samples in the generated world (default 128; quick 24)")
    g.add_argument("--workers", help="DataLoader worker counts (default 0,1,N with N the core count)")
    g.add_argument("--presets", help="default,world (default both)")
    g.add_argument("--sources", help="data: files,shards (default both: loose files, and the same samples as "
                   "WebDataset shards streamed as data=shards)")
    g.add_argument("--batch-sizes", help="train: batch sizes to scan (default 8,16,32; quick 2,4)")
    g.add_argument("--steps", type=int, help="train: timed steps (default 5; quick 1); accum: (default 3; quick 1)")
    g.add_argument("--accum", help="accum: trainer.accum_steps values (default 1,4,16; quick 1,2); --batch sets the "
                   "effective batch (default 256; quick 4), --presets one preset (default world)")
    g.add_argument("--median-of", type=int, help="accum: runs per configuration, median time kept (default 1)")
    g = p.add_argument_group("retrieval and imagebind")
    g.add_argument("--retrieval-n", help="collection sizes (default 20000; quick 5000)")
    g.add_argument("--kinds", default="flat,hnsw,ivfpq", help="index kinds")
    g.add_argument("--repeats", type=int, help="imagebind: timed forwards per batch (default 2; quick 1)")
    return p


def _encoders(a, device) -> dict:
    from .encoders import run_suite

    return run_suite(device=device, sizes=parse_list(a.sizes, ["small"]), modalities=parse_list(a.modalities, MODALITIES),
                     precisions=parse_list(a.precision, ["fp32", "bf16"]), rounds=a.rounds or (1 if a.quick else 3),
                     tokens=a.tokens or (256 if a.quick else None), batch=a.batch,
                     matmul_n=a.matmul_n or (512 if a.quick else None), compile=a.compile,
                     encoders=parse_list(a.encoders, []) or None)


def _world_n(a) -> int:
    return a.n or (24 if a.quick else 128)


def _data(a, device) -> dict:
    from .data import run_suite

    return run_suite(workdir=Path(a.workdir), presets=parse_list(a.presets, ["default", "world"]),
                     modalities=parse_list(a.modalities, MODALITIES), n=_world_n(a),
                     workers=[int(w) for w in parse_list(a.workers, [])] or None,
                     batch_size=4 if a.quick else 32, step_batch=None if a.quick else {"default": 8},
                     step_steps=1 if a.quick else 2, model_size=parse_list(a.sizes, ["tiny"])[0], device=str(device),
                     sources=parse_list(a.sources, ["files", "shards"]))


def _train(a, device) -> dict:
    from .data import bench_world
    from .train import ORDER, REAL_COLUMNS, SYNTH_COLUMNS, flatten_phases, real_data_breakdown, scan_batch, scan_bound

    size = parse_list(a.sizes, ["tiny"])[0]
    precision = parse_list(a.precision, ["fp32"])[0]
    mods = parse_list(a.modalities, MODALITIES)
    order = [m for m in mods if m != "image"] or list(ORDER)
    presets = parse_list(a.presets, ["default", "world"])
    steps = a.steps or (1 if a.quick else 5)
    common = dict(model_size=size, steps=steps, warmup=1, device=str(device), precision=precision,
                  compile=a.compile, fresh_process=not a.quick, threads=torch.get_num_threads())
    bound_batch = {"default": 4 if a.quick else 8, "world": 4 if a.quick else 32}
    out = {"bound": [], "batch": [], "breakdown": []}
    for preset in presets:
        out["bound"] += scan_bound(order=order, preset=preset, batch_size=bound_batch[preset], **common)
    batches = [int(b) for b in parse_list(a.batch_sizes, ["2", "4"] if a.quick else ["8", "16", "32", "64"])]
    out["batch"] = scan_batch(batch_sizes=batches, modalities=["image", *order], preset="world", **common)
    if "world" in presets:
        info = bench_world(Path(a.workdir) / f"world-{_world_n(a)}", _world_n(a))
        for preload in (True, False):
            r = real_data_breakdown(str(info.manifests["train"]), preset="world", modalities=["image", *order],
                                    model_size=size, batch_size=4 if a.quick else 32, preload=preload,
                                    num_workers=max(2, os.cpu_count() or 1), steps=steps, warmup=1,
                                    device=str(device), precision=precision, compile=a.compile)
            print(f"breakdown preload={preload}: {r['samples_per_s']} samples/s, data share {r['data_wait_share']} "
                  f"(load {r['load']})", flush=True)
            out["breakdown"].append(r)
        torch.set_num_threads(common["threads"])
    for k in out:
        flatten_phases(out[k])
    out["tables"] = [("Training vs bound modalities", SYNTH_COLUMNS, "bound"),
                     ("Training vs batch size (world preset, every modality bound)", SYNTH_COLUMNS, "batch"),
                     ("Training step breakdown on real files (world preset)", REAL_COLUMNS, "breakdown")]
    return out


def _retrieval(a, device) -> dict:
    from .retrieval import run_suite

    sizes = [int(float(n)) for n in parse_list(a.retrieval_n, ["5000"] if a.quick else ["20000"])]
    return run_suite(sizes=sizes, kinds=parse_list(a.kinds, []), queries=100 if a.quick else 500,
                     threads=torch.get_num_threads())


def _imagebind(a, device) -> dict:
    from .imagebind import HUGE_TOWERS, run_suite

    mods = [m for m in parse_list(a.modalities, []) if m in HUGE_TOWERS] or None  # points has no ImageBind tower
    return run_suite(size=parse_list(a.sizes, ["huge"])[0], modalities=mods,
                     batches=(1,) if a.quick else (1, 8), video_batches=(1,), repeats=a.repeats or (1 if a.quick else 2),
                     device=device, precisions=parse_list(a.precision, ["fp32"]))


def _accum(a, device) -> dict:
    from .accum import DEFAULT_MODALITIES, run_suite

    accum = [int(k) for k in parse_list(a.accum, ["1", "2"] if a.quick else ["1", "4", "16"])]
    return run_suite(batch_size=a.batch or (4 if a.quick else 256), accum=accum, fresh_process=not a.quick,
                     threads=torch.get_num_threads(), repeats=a.median_of or 1,
                     modalities=parse_list(a.modalities, DEFAULT_MODALITIES),
                     preset=parse_list(a.presets, ["world"])[0], model_size=parse_list(a.sizes, ["tiny"])[0],
                     steps=a.steps or (1 if a.quick else 3), warmup=1, device=str(device),
                     precision=parse_list(a.precision, ["fp32"])[0])


RUNNERS = {"encoders": _encoders, "data": _data, "train": _train, "accum": _accum, "retrieval": _retrieval,
           "imagebind": _imagebind}
TITLES = {"encoders": "Encoders: throughput and share of the matmul peak", "data": "Data loading: files -> batches",
          "retrieval": "Retrieval index", "imagebind": "ImageBind size: latency per forward"}


def main(argv: list[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    suites = list(SUITES) if a.suite == "all" else [a.suite]
    report = {"environment": environment(device), "suites": {}}
    busy, cores = report["environment"]["loadavg"][0], report["environment"]["cpu_count"] or 1
    if device.type == "cpu" and busy > cores and report["environment"]["omp_wait_policy"] == "default":
        print(f"note: load average {busy} on {cores} cores: other processes share the CPU, so timings are inflated, "
              "and OpenMP threads that spin-wait for a descheduled sibling slow eager models most; "
              "OMP_WAIT_POLICY=PASSIVE (set before starting) measures what a shared machine can give "
              "(docs/benchmarks.md)", file=sys.stderr, flush=True)
    markdown = []
    for name in suites:
        env = environment(device)
        t0 = time.perf_counter()
        result = RUNNERS[name](a, device)
        tables = result.pop("tables", None) or [(TITLES[name], result.pop("columns"), "rows")]
        result.pop("columns", None)
        env_end = environment(device)
        result.update({"environment": env, "loadavg_end": env_end["loadavg"],
                       "seconds": round(time.perf_counter() - t0, 1)})
        for title, columns, key in tables:
            markdown.append(print_table(title, columns, result[key], env))
        report["suites"][name] = result
        if a.json:  # after every suite: a long run that fails late keeps what it measured
            write_json(a.json, report)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(f"\nCommand: `{report['environment']['command']}`\n\n" + "\n".join(markdown))
    return report
