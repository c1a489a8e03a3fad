"""A bounded load test of ``anybind-serve`` on loopback (``tools/bench_serve.py`` is its command line).

It writes a tiny model's checkpoint and an index of ``n`` random unit vectors (the index part of a 100k-item
collection; ``kind="flat"`` by default: exact search), starts the real server (``python -m anybind.serve``) on a
free loopback port, then:

1. ``clients`` concurrent clients send text queries for ``duration`` seconds: requests/s, p50/p99 latency, errors;
2. the same with audio uploads (2 s WAVs, multipart);
3. one client, one text query at a time: p50 over HTTP against ``Index.search`` plus the text tower called
   in-process on the same model and index.

Every phase stops by itself (a deadline, and a hard timeout on each request); the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TEXTS = [f"a {c} {s} that {m}" for c in ("red", "green", "blue", "yellow") for s in ("cube", "sphere", "cone")
         for m in ("spins", "bounces", "slides")]
MODALITIES = ("image", "text", "audio", "video", "points")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def prepare(folder: Path, n: int, encoders: dict[str, str], seed: int = 0, kind: str = "flat") -> tuple[Path, Path]:
    """A checkpoint of a random model from ``encoders`` and an index of ``n`` random unit vectors in its space."""
    import torch

    import anybind
    from anybind.retrieval import build_index

    torch.manual_seed(seed)
    model = anybind.create_model(encoders)
    ckpt = anybind.save_model(folder / "ckpt" / "model", model)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, model.embed_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    meta = [{"id": f"item{i}", "modality": MODALITIES[i % len(MODALITIES)], "source": None} for i in range(n)]
    index = build_index(vectors, meta, kind=kind)
    index.info["model"] = {"checkpoint": str(ckpt)}
    index.save(folder / "index")
    return ckpt, folder / "index"


def write_wavs(folder: Path, count: int = 8, seconds: float = 2.0, sr: int = 16000) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(count):
        p = folder / f"tone{i}.wav"
        sf.write(p, (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), sr)
        paths.append(p)
    return paths


def start_server(index: Path, ckpt: Path, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    import urllib.request

    cmd = [sys.executable, "-m", "anybind.serve", "--index", str(index), "--checkpoint", str(ckpt), "--port", str(port),
           "--log-level", "warning", *extra]
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"anybind-serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("anybind-serve did not answer within 300 s")


async def _load(url: str, clients: int, duration: float, request: Callable[[Any, int], Any], timeout: float) -> dict:
    """``clients`` loops sending ``await request(client, n)`` until ``duration`` s have passed."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker(w: int):
            n = w
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await request(client, n)
                    ok = r.status_code == 200
                    key = None if ok else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                if key is None:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1
                n += clients

        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(ms), "errors": sum(errors.values()),
            "error_kinds": errors, "requests_per_s": round(len(ms) / wall, 2), "p50_ms": round(_pct(ms, 50), 2),
            "p99_ms": round(_pct(ms, 99), 2), "max_ms": round(max(ms), 2) if ms else None}


def text_load(url: str, clients: int, duration: float, k: int = 10) -> dict:
    async def request(client, n):
        return await client.post("/search", json={"queries": [{"text": TEXTS[n % len(TEXTS)] + f" #{n}"}], "k": k})

    return asyncio.run(_load(url, clients, duration, request, timeout=60))


def upload_load(url: str, clients: int, duration: float, wavs: list[Path], k: int = 10) -> dict:
    blobs = [(p.name, p.read_bytes()) for p in wavs]

    async def request(client, n):
        name, data = blobs[n % len(blobs)]
        return await client.post("/search", files={"file": (name, data, "audio/wav")}, data={"k": str(k)})

    return asyncio.run(_load(url, clients, duration, request, timeout=60))


def warm_up(url: str, wavs: list[Path]) -> None:
    """A few sequential requests, so that no phase measures the first tokenizer load or the first forward."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(3):
            client.post("/search", json={"queries": [{"text": TEXTS[n]}], "k": 10}).raise_for_status()
        for p in wavs[:2]:
            client.post("/search", files={"file": (p.name, p.read_bytes(), "audio/wav")}).raise_for_status()


def single_query(url: str, ckpt: Path, index_dir: Path, rounds: int, k: int = 10, threads: int | None = None) -> dict:
    """p50 of one text query at a time: over HTTP, and ``model.embed`` + ``Index.search`` in this process."""
    import httpx
    import torch

    import anybind
    from anybind.retrieval import Index

    if threads:
        torch.set_num_threads(threads)  # the server's setting, for a like-for-like comparison
    http_ms = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for n in range(rounds + 3):
            t0 = time.perf_counter()
            r = client.post("/search", json={"queries": [{"text": TEXTS[n % len(TEXTS)]}], "k": k})
            r.raise_for_status()
            if n >= 3:  # the first few warm up the tokenizer and the connection
                http_ms.append((time.perf_counter() - t0) * 1000)
    model, index = anybind.load(ckpt), Index.load(index_dir)
    local_ms = []
    for n in range(rounds + 3):
        t0 = time.perf_counter()
        v = model.embed({"text": [TEXTS[n % len(TEXTS)]]}, progress=False)["text"].numpy()
        index.search(v, k=k)
        if n >= 3:
            local_ms.append((time.perf_counter() - t0) * 1000)
    http_p50, local_p50 = statistics.median(http_ms), statistics.median(local_ms)
    return {"rounds": rounds, "http_p50_ms": round(http_p50, 2), "in_process_p50_ms": round(local_p50, 2),
            "ratio": round(http_p50 / local_p50, 2), "http_p99_ms": round(_pct(http_ms, 99), 2),
            "in_process_p99_ms": round(_pct(local_ms, 99), 2)}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": [round(x, 2) for x in os.getloadavg()]}


def run(n: int = 100_000, clients: int = 16, duration: float = 30.0, rounds: int = 50, kind: str = "flat",
        encoders: dict[str, str] | None = None, server_args: list[str] | None = None, out: str | None = None,
        threads: int | None = 1) -> dict:
    encoders = encoders or {"text": "text_transformer_tiny", "audio": "audio_vit_tiny"}
    server_args = list(server_args or []) + (["--threads", str(threads)] if threads else [])
    with tempfile.TemporaryDirectory(prefix="anybind-bench-serve-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ckpt, index_dir = prepare(tmp, n, encoders, kind=kind)
        wavs = write_wavs(tmp / "wav")
        result: dict[str, Any] = {"machine": machine(), "n": n, "kind": kind, "encoders": encoders,
                                  "server_args": server_args, "threads": threads,
                                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                                  "prepare_s": round(time.perf_counter() - t0, 1)}
        port = _free_port()
        proc = start_server(index_dir, ckpt, port, tmp / "server.log", server_args or [])
        url = f"http://127.0.0.1:{port}"
        try:
            warm_up(url, wavs)
            result["text"] = text_load(url, clients, duration)
            result["text"]["load_average"] = [round(x, 2) for x in os.getloadavg()]
            result["upload_audio"] = upload_load(url, clients, duration, wavs)
            result["upload_audio"]["load_average"] = [round(x, 2) for x in os.getloadavg()]
            result["single_text_query"] = single_query(url, ckpt, index_dir, rounds, threads=threads)
            import httpx

            result["server_stats"] = httpx.get(url + "/info", timeout=30).json()["stats"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if out:
        from ..io import atomic_write_json

        atomic_write_json(out, result)
    return result


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = ["| load | clients | seconds | requests | requests/s | p50 ms | p99 ms | errors | load average |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, key in (("text queries", "text"), ("audio uploads (2 s WAV)", "upload_audio")):
        x = r[key]
        rows.append(f"| {name} | {x['clients']} | {x['seconds']} | {x['requests']} | {x['requests_per_s']} | {x['p50_ms']} | "
                    f"{x['p99_ms']} | {x['errors']} | {' '.join(map(str, x['load_average']))} |")
    s = r["single_text_query"]
    rows += ["", "| one text query at a time | p50 ms | p99 ms |", "|---|---|---|",
             f"| over HTTP (`POST /search`) | {s['http_p50_ms']} | {s['http_p99_ms']} |",
             f"| in-process (`model.embed` + `Index.search`) | {s['in_process_p50_ms']} | {s['in_process_p99_ms']} |",
             f"| ratio | {s['ratio']}x | |"]
    head = (f"{m['date']}, {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}; index of {r['n']} "
            f"random unit vectors (`kind={r['kind']}`), towers {r['encoders']}; server args "
            f"`{' '.join(r['server_args']) or 'default'}`; OMP_WAIT_POLICY={r['omp_wait_policy']}")
    return head + "\n\n" + "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="bench_serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="items in the index")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of each load phase")
    p.add_argument("--rounds", type=int, default=50, help="single queries for the p50 comparison")
    p.add_argument("--kind", default="flat", help="index kind (flat: exact; auto, hnsw, ivfpq)")
    p.add_argument("--encoders", default="text=text_transformer_tiny,audio=audio_vit_tiny")
    p.add_argument("--server-arg", action="append", default=[], help="passed to anybind-serve (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the in-process "
                                                          "baseline (0: torch's default)")
    p.add_argument("--json", dest="out", help="write everything measured to this file")
    args = p.parse_args(argv)
    # idle OpenMP threads sleep instead of spinning: on a shared machine spinning costs more than it saves
    # (docs/benchmarks.md); set before torch starts, in this process and so in the server it starts
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    encoders = dict(kv.split("=", 1) for kv in args.encoders.split(","))
    r = run(args.n, args.clients, args.duration, args.rounds, args.kind, encoders, args.server_arg, args.out,
            args.threads or None)
    print(json.dumps(r, indent=2))
    print()
    print(markdown(r))


if __name__ == "__main__":
    main()
