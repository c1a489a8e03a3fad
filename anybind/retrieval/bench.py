"""Index benchmark: build time, memory, single-query latency (p50/p99) and recall@10 against exact search.

Collections are ``n`` unit vectors of width ``d`` drawn either from a mixture of clusters (the shape real
embeddings have) or uniformly on the sphere (the degenerate case: every neighbour is almost as far as any other
point, so graph and quantizer indexes struggle). Queries are fresh draws from the same distribution, not
members of the collection. Exact search is batched faiss ``IndexFlatIP`` (the compute-bound reference).

    python tools/bench_index.py --n 100000 --n 1000000 --dist mixture --dist uniform --threads 2 --out bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import numpy as np

from .index import IndexParams, build_index, estimate_memory, import_faiss


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_vectors(n: int, d: int, dist: str, *, seed: int = 0, clusters: int = 1000, spread: float = 1.0,
                   chunk: int = 65536) -> np.ndarray:
    """``(n, d)`` float32 unit vectors; ``mixture``: centre + Gaussian noise of norm ~``spread``; ``uniform``."""
    rng = np.random.default_rng(seed)
    centres = None
    if dist == "mixture":
        centres = np.random.default_rng(12345).standard_normal((clusters, d)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    elif dist != "uniform":
        raise ValueError(f"dist must be 'mixture' or 'uniform', got {dist!r}")
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = rng.standard_normal((m, d), dtype=np.float32)
        if centres is not None:
            x = centres[rng.integers(0, clusters, m)] + (spread / np.sqrt(d)) * x
        out[lo:lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_one(n: int, d: int, dist: str, kinds: list[str], *, queries: int = 1000, latency_queries: int = 1000,
              k: int = 10, threads: int = 2, memory_budget: str | None = None, params: IndexParams | None = None,
              log=print) -> dict:
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
    t = time.perf_counter()
    _, truth = flat.search(q, k)
    exact_batched_ms = (time.perf_counter() - t) * 1000 / queries
    t = time.perf_counter()
    for i in range(min(20, queries)):
        flat.search(q[i:i + 1], k)
    exact_single_ms = (time.perf_counter() - t) * 1000 / min(20, queries)
    del flat
    gc.collect()
    result = {"n": n, "d": d, "dist": dist, "queries": queries, "k": k, "threads": threads,
              "exact_batched_ms_per_query": round(exact_batched_ms, 3), "exact_single_query_ms": round(exact_single_ms, 3),
              "indexes": []}
    log(f"[{dist} n={n}] exact: batched {exact_batched_ms:.2f} ms/query, one at a time {exact_single_ms:.2f} ms")
    meta = [{"id": str(i), "modality": "vector"} for i in range(n)]
    for kind in kinds:
        gc.collect()
        rss0 = rss_bytes()
        t = time.perf_counter()
        index = build_index(x, meta, kind=kind, memory_budget=memory_budget, params=params, threads=threads)
        build_s = time.perf_counter() - t
        rss1 = rss_bytes()
        part = index.parts["vector"]
        _, rows = index.search_arrays(q, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rows.tolist(), truth.tolist())]))
        lat = []
        for i in range(min(latency_queries, queries)):
            s = time.perf_counter()
            index.search_arrays(q[i], k)
            lat.append((time.perf_counter() - s) * 1000)
        lat = np.array(lat)
        entry = {"kind": part.kind, "requested": kind, "settings": {k2: v for k2, v in part.settings.items()},
                 "build_s": round(build_s, 2), "memory_estimate_mb": round(part.memory_bytes() / 2**20, 1),
                 "rss_growth_mb": round((rss1 - rss0) / 2**20, 1), "recall_at_10": round(recall, 4),
                 "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                 "latency_ms_p99": round(float(np.percentile(lat, 99)), 3)}
        result["indexes"].append(entry)
        log(f"[{dist} n={n}] {json.dumps(entry)}")
        del index, part
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="bench_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, action="append", help="collection sizes (default 100000)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--dist", action="append", choices=["mixture", "uniform"], help="default: mixture and uniform")
    p.add_argument("--kind", action="append", choices=["auto", "flat", "hnsw", "ivfpq"], help="default: hnsw and ivfpq")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-budget", default=None)
    p.add_argument("--ef-construction", type=int, default=None)
    p.add_argument("--hnsw-m", type=int, default=None)
    p.add_argument("--target-recall", type=float, default=None)
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    params = IndexParams()
    if a.ef_construction:
        params.ef_construction = a.ef_construction
    if a.hnsw_m:
        params.hnsw_m = a.hnsw_m
    if a.target_recall:
        params.target_recall = a.target_recall
    runs = []
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": a.threads,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs}
    for n in a.n or [100_000]:
        for dist in a.dist or ["mixture", "uniform"]:
            runs.append(bench_one(n, a.d, dist, a.kind or ["hnsw", "ivfpq"], queries=a.queries, threads=a.threads,
                                  memory_budget=a.memory_budget, params=params, log=lambda s: print(s, flush=True)))
            if a.out:
                Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
