"""Retrieval index: build time, memory, single-query latency and recall@10, through :mod:`anybind.bench.index`.

The suite runs that module's :func:`~anybind.bench.index.bench_one` on a small collection (``--n``, 20 000
unit vectors by default) so that it finishes in a minute or two; the 100k / 1M figures of docs/benchmarks.md
come from ``python tools/bench_index.py`` itself.
"""

from __future__ import annotations

COLUMNS = [("dist", "vectors"), ("n", "n"), ("kind", "index"), ("build_s", "build s"), ("recall_at_10", "recall@10"),
           ("latency_ms_p50", "p50 ms"), ("latency_ms_p99", "p99 ms"), ("memory_estimate_mb", "memory MB"),
           ("exact_batched_ms_per_query", "exact batched ms/query"), ("load", "load")]


def run_suite(*, sizes: list[int], d: int = 512, dists=("mixture",), kinds=("flat", "hnsw", "ivfpq"),
              queries: int = 200, threads: int = 2, log=print) -> dict:
    from .index import bench_one
    from .common import load

    runs, rows = [], []
    for n in sizes:
        for dist in dists:
            r = bench_one(n, d, dist, list(kinds), queries=queries, latency_queries=queries, threads=threads, log=log)
            runs.append(r)
            for e in r["indexes"]:
                rows.append({"dist": dist, "n": n, "exact_batched_ms_per_query": r.get("exact_batched_ms_per_query"),
                             "load": load(), **{k: v for k, v in e.items() if not isinstance(v, (list, dict))}})
    return {"runs": runs, "rows": rows, "columns": COLUMNS}
