"""Streamed index benchmark: a collection larger than memory, generated in chunks into a store, indexed from it.

``python tools/bench_index.py --stream --n 10000000 --memory-budget 6G`` (see :func:`bench_streamed`):

1. generate ``n`` clustered unit vectors (the mixture of :func:`~anybind.bench.index_measure.sample_vectors`) a chunk
   at a time into an embedding store (float16 shards by default), merging each chunk into the exact top-10 of
   the benchmark's queries as it goes, so ground truth needs no second pass over the data;
2. ``build_index(store, kind=..., memory_budget=...)``: ``auto`` picks ``ivfpq_disk`` once the float32 vectors do
   not fit the budget; the build reads the shards chunk by chunk;
3. save it, load it back, then recall@10 and single-query latency (p50 / p99), warm (the
   vectors file in the kernel's page cache) and cold (dropped from it first, so every re-ranking read goes to
   disk). Peak RSS of each phase, the index's size on disk and in memory, and the load average beside each.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..retrieval.index import Index, IndexParams, build_index, import_faiss
from ..retrieval.index.backend import RunningTopk
from ..retrieval.index.tuning import recall_at
from ..retrieval.store_writer import StoreWriter
from .common import cpu_model
from .index_measure import index_bytes, iter_sample_vectors, load_averages, peak_rss_bytes, reset_peak_rss, rss_bytes


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _drop_cache(paths) -> None:
    """Ask the kernel to drop these files from its page cache (a cold start; the files stay intact)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _latency(index: Index, q: np.ndarray, k: int) -> np.ndarray:
    lat = np.empty(len(q))
    for i in range(len(q)):
        s = time.perf_counter()
        index.search_arrays(q[i], k)
        lat[i] = (time.perf_counter() - s) * 1000
    return lat


def _mb(x: float) -> float:
    return round(x / 2**20, 1)


def generate_store(path: Path, n: int, d: int, queries: np.ndarray, *, clusters: int, seed: int = 1, dtype: str = "float16",
                   shard_size: int = 262_144, block: int = 65_536, k: int = 10, log=print) -> tuple:
    """Write ``n`` mixture vectors to a store at ``path`` a shard at a time; returns ``(store, exact top-k rows)``.

    Vectors are drawn ``block`` rows at a time (float32 temporaries stay small) into one ``dtype`` shard buffer;
    the ground truth is taken on the stored (rounded) values, the ones the index will hold."""
    writer = StoreWriter(path, d, dtype=dtype, overwrite=True)
    truth = RunningTopk(queries, k)
    buf = np.empty((shard_size, d), dtype=dtype)
    t0, at, filled = time.perf_counter(), 0, 0

    def flush():
        lo = at - filled
        meta = [{"id": str(i), "modality": "vector"} for i in range(lo, at)]
        writer.write_shard(f"{lo // shard_size:05d}-vector", "vector", buf[:filled], meta)

    for chunk in iter_sample_vectors(n, d, "mixture", seed=seed, clusters=clusters, chunk=block):
        stored = chunk.astype(dtype, copy=False)
        truth.update(stored.astype(np.float32, copy=False), at)
        while len(stored):
            take = min(len(stored), shard_size - filled)
            buf[filled:filled + take] = stored[:take]
            stored, filled, at = stored[take:], filled + take, at + take
            if filled == shard_size:
                flush()
                filled = 0
                if (at // shard_size) % 8 == 0:
                    log(f"  generated {at:,} / {n:,} in {time.perf_counter() - t0:.0f} s (load {load_averages()})")
    if filled:
        flush()
    return writer.finalize(), truth.result()[1]


def bench_streamed(n: int, d: int = 512, *, kind: str = "auto", memory_budget: str | None = "6G", clusters: int = 1000,
                   queries: int = 1000, cold_queries: int = 100, k: int = 10, threads: int = 2, repeats: int = 3,
                   work_dir: str | Path = "bench_stream", store_dtype: str = "float16", params: IndexParams | None = None,
                   keep: bool = False, log=print) -> dict:
    """Benchmark one streamed build of ``n`` x ``d`` (see the module docstring); files go under ``work_dir``."""
    faiss = import_faiss()
    if faiss is None:
        raise ImportError("the benchmark needs faiss-cpu")
    import torch

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    store_path, index_path = work / "store", work / "index"
    if index_path.exists():
        shutil.rmtree(index_path)
    params = params or IndexParams()
    params.disk_dir = params.disk_dir or str(work / "scratch")
    q = next(iter_sample_vectors(queries, d, "mixture", seed=2, clusters=clusters, chunk=queries))
    result = {"n": n, "d": d, "clusters": clusters, "queries": queries, "k": k, "threads": threads, "kind": kind,
              "memory_budget": memory_budget, "store_dtype": store_dtype, "cpu": cpu_model(), "cores": os.cpu_count(),
              "faiss": faiss.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_load": load_averages()}

    reset_peak_rss()
    t = time.perf_counter()
    store, truth = generate_store(store_path, n, d, q, clusters=clusters, dtype=store_dtype, k=k, log=log)
    result.update(generate_s=round(time.perf_counter() - t, 1), generate_peak_rss_mb=_mb(peak_rss_bytes()),
                  store_gb=round(_folder_bytes(store_path) / 2**30, 2), generate_end_load=load_averages())
    log(f"[n={n:,}] store of {result['store_gb']} GB generated in {result['generate_s']} s, truth computed on the way")

    gc.collect()
    reset_peak_rss()
    rss0, build_load = rss_bytes(), load_averages()
    result["build_start_rss_mb"] = _mb(rss0)
    t = time.perf_counter()
    index = build_index(store, kind=kind, memory_budget=memory_budget, params=params, threads=threads)
    build_s = time.perf_counter() - t
    part = next(iter(index.parts.values()))
    result.update(build_s=round(build_s, 1), build_stages_s=part.timings, build_load=build_load, build_end_load=load_averages(),
                  build_peak_rss_mb=_mb(peak_rss_bytes()), build_rss_growth_mb=_mb(rss_bytes() - rss0),
                  index_kind=part.kind, settings=dict(part.settings))
    log(f"[n={n:,}] built {part.kind} in {build_s:.0f} s {part.timings}, peak RSS {result['build_peak_rss_mb']} MB, "
        f"settings {part.settings}")
    t = time.perf_counter()
    index.save(index_path)
    result["save_s"] = round(time.perf_counter() - t, 1)
    del index, part
    gc.collect()
    _drop_cache([sh.vectors_path for sh in store.shards])  # queries never read the store: let the cache hold the index

    reset_peak_rss()
    rss0 = rss_bytes()
    result["query_start_rss_mb"] = _mb(rss0)
    t = time.perf_counter()
    index = Index.load(index_path, verify=False)
    part = next(iter(index.parts.values()))
    result.update(load_s=round(time.perf_counter() - t, 2), index_disk_gb=round(_folder_bytes(index_path) / 2**30, 2),
                  index_memory_mb=_mb(index_bytes(part.impl) + part.rows.nbytes),
                  loaded_rss_growth_mb=_mb(rss_bytes() - rss0))
    _, rows = index.search_arrays(q, k)
    result["recall_at_10"] = round(recall_at(rows, truth), 4)
    runs = []
    for _ in range(repeats):
        lat = _latency(index, q, k)
        runs.append({"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3),
                     "load": load_averages()})
    best = min(runs, key=lambda r: r["p50"])
    result.update(latency_ms_p50=best["p50"], latency_ms_p99=best["p99"], latency_load=best["load"], latency_runs=runs)
    if cold_queries and getattr(part, "vectors", None) is not None:
        _drop_cache([s.path for s in part.vectors.segments])
        lat = _latency(index, q[:cold_queries], k)
        result.update(cold_ms_p50=round(float(np.percentile(lat, 50)), 3), cold_ms_p99=round(float(np.percentile(lat, 99)), 3),
                      cold_load=load_averages())
    result.update(query_peak_rss_mb=_mb(peak_rss_bytes()), rss_anon_mb=_mb(_status("RssAnon")),
                  rss_file_mb=_mb(_status("RssFile")),
                  finished=time.strftime("%Y-%m-%d %H:%M:%S"), end_load=load_averages())
    log(f"[n={n:,}] {json.dumps({k_: v for k_, v in result.items() if k_ != 'latency_runs'})}")
    if not keep:
        del index, part
        gc.collect()
        shutil.rmtree(work, ignore_errors=True)
    return result


def markdown_row(r: dict) -> str:
    st = r["settings"]
    desc = (f"IVF{st.get('nlist')}-PQ{st.get('pq_m')}x{st.get('nbits')}{'fs' if st.get('fast_scan') else ''} "
            f"nprobe={st.get('nprobe')} + re-rank k_factor={st.get('k_factor')} from {st.get('disk_dtype', '')} on disk"
            if r["index_kind"] == "ivfpq_disk" else f"{r['index_kind']} {st}")
    if r["kind"] == "auto":
        desc = f"auto ({r['memory_budget']}) -> {desc}"
    cold = f"{r.get('cold_ms_p50', '-')} / {r.get('cold_ms_p99', '-')}"
    return (f"| {r['n']:,} | {r['clusters']} | {desc} | {r['generate_s']} | {r['build_s']} | {r['index_memory_mb']} MB / "
            f"{r['index_disk_gb']} GB | {r['build_peak_rss_mb']} / {r['query_peak_rss_mb']} MB | {r['latency_ms_p50']} | "
            f"{r['latency_ms_p99']} | {cold} | {r['recall_at_10']} | {' '.join(map(str, r['latency_load']))} |")
