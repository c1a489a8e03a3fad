"""Index benchmark: build time, memory, single-query latency (p50/p99) and recall@10 against exact search.

Collections are ``n`` unit vectors of width ``d`` drawn either from a mixture of clusters (the shape real
embeddings have) or uniformly on the sphere (the degenerate case: every neighbour is almost as far as any other
point, so graph and quantizer indexes struggle). Queries are fresh draws from the same distribution, not
members of the collection. Exact search, batched (the compute-bound reference), is timed both as faiss
``IndexFlatIP`` and as anybind's PyTorch :func:`exact_topk`. Every timing is repeated and the fastest run is
reported with the load average at that run: on a shared machine the load says how much of the CPU it had.

    python tools/bench_index.py --n 100000 --n 1000000 --dist mixture --dist uniform --threads 2 --out bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..retrieval.index import IndexParams, build_index, exact_topk, import_faiss
from .common import cpu_model
from .index_measure import (index_bytes, load_averages, peak_rss_bytes, reset_peak_rss,
                            rss_bytes, sample_vectors)


def _latency(index, q: np.ndarray, k: int, count: int) -> np.ndarray:
    """Milliseconds of ``count`` searches of one query each (the interactive case)."""
    lat = np.empty(count)
    for i in range(count):
        s = time.perf_counter()
        index.search_arrays(q[i], k)
        lat[i] = (time.perf_counter() - s) * 1000
    return lat


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist())]))


def bench_one(n: int, d: int, dist: str, kinds: list[str], *, queries: int = 1000, latency_queries: int = 1000,
              k: int = 10, threads: int = 2, repeats: int = 3, memory_budget: str | None = None,
              params: IndexParams | None = None, log=print) -> dict:
    """Benchmark each index kind on one collection. Timings are repeated ``repeats`` times and the fastest run
    is reported with the load average at that run (the machine may be shared)."""
    faiss = import_faiss()
    if faiss is None:
        raise ImportError("the benchmark needs faiss-cpu")
    faiss.omp_set_num_threads(threads)
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    x = sample_vectors(n, d, dist, seed=1)
    q = sample_vectors(queries, d, dist, seed=2)
    log(f"[{dist} n={n}] data generated in {time.perf_counter() - t0:.1f} s")
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    _, truth = flat.search(q, k)
    exact_runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        flat.search(q, k)
        exact_runs.append({"ms_per_query": round((time.perf_counter() - t) * 1000 / queries, 3),
                           "load": load_averages()})
    torch_runs = []  # anybind's own exact path (PyTorch matmul + top-k, streamed in chunks)
    for _ in range(repeats):
        t = time.perf_counter()
        exact_topk(q, x, k)
        torch_runs.append({"ms_per_query": round((time.perf_counter() - t) * 1000 / queries, 3),
                           "load": load_averages()})
    single = min(20, queries)
    t = time.perf_counter()
    for i in range(single):
        flat.search(q[i:i + 1], k)
    exact_single_ms = (time.perf_counter() - t) * 1000 / single
    del flat
    gc.collect()
    best_exact = min(exact_runs, key=lambda r: r["ms_per_query"])
    best_torch = min(torch_runs, key=lambda r: r["ms_per_query"])
    result = {"n": n, "d": d, "dist": dist, "queries": queries, "k": k, "threads": threads,
              "exact_batched_ms_per_query": best_exact["ms_per_query"], "exact_batched_load": best_exact["load"],
              "exact_batched_runs": exact_runs, "exact_torch_ms_per_query": best_torch["ms_per_query"],
              "exact_torch_load": best_torch["load"], "exact_torch_runs": torch_runs,
              "exact_single_query_ms": round(exact_single_ms, 3), "indexes": []}
    log(f"[{dist} n={n}] exact batched: faiss {best_exact['ms_per_query']:.2f} ms/query (load {best_exact['load']}), "
        f"PyTorch {best_torch['ms_per_query']:.2f} ms/query (load {best_torch['load']}), best of {repeats}; "
        f"one query at a time {exact_single_ms:.2f} ms")
    meta = [{"id": str(i), "modality": "vector"} for i in range(n)]
    for kind in kinds:
        gc.collect()
        rss0 = rss_bytes()
        reset_peak_rss()
        build_load = load_averages()
        t = time.perf_counter()
        index = build_index(x, meta, kind=kind, memory_budget=memory_budget, params=params, threads=threads)
        build_s = time.perf_counter() - t
        rss1, peak = rss_bytes(), peak_rss_bytes()
        part = index.parts["vector"]
        _, rows = index.search_arrays(q, k)
        recall = _recall(rows, truth)
        runs = []
        for _ in range(repeats):
            lat = _latency(index, q, k, min(latency_queries, queries))
            runs.append({"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3),
                         "load": load_averages()})
        best = min(runs, key=lambda r: r["p50"])
        entry = {"kind": part.kind, "requested": kind, "settings": dict(part.settings),
                 "build_s": round(build_s, 1), "build_stages_s": getattr(part, "timings", {}), "build_load": build_load, "build_end_load": load_averages(),
                 "index_mb": round(index_bytes(part.impl) / 2**20, 1),
                 "memory_estimate_mb": round(part.memory_bytes() / 2**20, 1),
                 "rss_growth_mb": round((rss1 - rss0) / 2**20, 1), "rss_mb": round(rss1 / 2**20, 1),
                 "build_peak_rss_mb": round(peak / 2**20, 1), "recall_at_10": round(recall, 4),
                 "latency_ms_p50": best["p50"], "latency_ms_p99": best["p99"], "latency_load": best["load"],
                 "latency_runs": runs}
        result["indexes"].append(entry)
        log(f"[{dist} n={n}] {json.dumps(entry)}")
        del index, part
    return result


def markdown_rows(report: dict) -> list[str]:
    """One table row per (collection, index) of a :func:`main` report."""
    out = []
    for r in report["runs"]:
        for e in r["indexes"]:
            st = e["settings"]
            if e["kind"] == "hnsw":
                desc = f"HNSW M={st.get('m')} efC={st.get('ef_construction')} efS={st.get('ef_search')}"
            elif e["kind"] == "ivfpq":
                desc = (f"IVF{st.get('nlist')}-PQ{st.get('pq_m')}x{st.get('nbits')} nprobe={st.get('nprobe')}"
                        + (f" + refine k_factor={st.get('k_factor')}" if st.get("refine") else ""))
            else:
                desc = e["kind"]
            if e["requested"] == "auto":
                desc = f"auto -> {desc}"
            out.append(f"| {r['n']:,} | {r['dist']} | {desc} | {e['build_s']} | {e['index_mb']} MB / {e['rss_mb']} MB "
                       f"(build peak {e['build_peak_rss_mb']} MB) | {e['latency_ms_p50']} | {e['latency_ms_p99']} | "
                       f"{e['recall_at_10']} | {r['exact_batched_ms_per_query']} / {r.get('exact_torch_ms_per_query', '-')} | "
                       f"{' '.join(map(str, e['latency_load']))} |")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="bench_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, action="append", help="collection sizes (default 100000)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--dist", action="append", choices=["mixture", "uniform"], help="default: mixture and uniform")
    p.add_argument("--kind", action="append", choices=["auto", "flat", "hnsw", "ivfpq", "ivfpq_disk"], help="default: hnsw and ivfpq")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats; the fastest is reported with its load")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-budget", default=None)
    p.add_argument("--flat-max", type=int, default=None)
    p.add_argument("--hnsw-max", type=int, default=None)
    p.add_argument("--hnsw-m", type=int, default=None)
    p.add_argument("--ef-construction", type=int, default=None)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--pq-m", type=int, default=None)
    p.add_argument("--k-factor", type=int, default=None)
    p.add_argument("--refine", choices=["yes", "no"], default=None)
    p.add_argument("--target-recall", type=float, default=None)
    p.add_argument("--stream", action="store_true", help="generate each collection in chunks into a store on disk and "
                   "index it from there (anybind.bench.index_stream: collections larger than memory)")
    p.add_argument("--clusters", type=int, default=1000, help="mixture clusters (--stream)")
    p.add_argument("--work-dir", default="bench_stream", help="where --stream writes its store and index (removed after)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    params = IndexParams()
    for arg, name in (("flat_max", "flat_max"), ("hnsw_max", "hnsw_max"), ("hnsw_m", "hnsw_m"),
                      ("ef_construction", "ef_construction"), ("ef_search", "ef_search"), ("nlist", "ivf_nlist"),
                      ("nprobe", "nprobe"), ("pq_m", "pq_m"), ("k_factor", "k_factor"), ("target_recall", "target_recall")):
        if getattr(a, arg) is not None:
            setattr(params, name, getattr(a, arg))
    if a.refine is not None:
        params.refine = a.refine == "yes"
    if a.stream:
        return _main_streamed(a, params, argv)
    import faiss

    runs = []
    report = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(),
                          "faiss": faiss.__version__, "numpy": np.__version__},
              "threads": a.threads, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_load": load_averages(),
              "command": "python tools/bench_index.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "params": asdict(params), "runs": runs}
    for n in a.n or [100_000]:
        for dist in a.dist or ["mixture", "uniform"]:
            runs.append(bench_one(n, a.d, dist, a.kind or ["hnsw", "ivfpq"], queries=a.queries, threads=a.threads,
                                  repeats=a.repeats, memory_budget=a.memory_budget, params=params,
                                  log=lambda s: print(s, flush=True)))
            if a.out:
                Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(markdown_rows(report)))
    return report


def _main_streamed(a, params: IndexParams, argv) -> dict:
    from .index_stream import bench_streamed, markdown_row

    report = {"command": "python tools/bench_index.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "params": asdict(params), "runs": []}
    for n in a.n or [1_000_000]:
        kind = (a.kind or ["auto"])[0]
        report["runs"].append(bench_streamed(n, a.d, kind=kind, memory_budget=a.memory_budget or "6G",
                                             clusters=a.clusters, queries=a.queries, threads=a.threads, repeats=a.repeats,
                                             work_dir=a.work_dir, params=params, log=lambda s: print(s, flush=True)))
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("\n".join(markdown_row(r) for r in report["runs"]))
    return report


if __name__ == "__main__":
    main()
