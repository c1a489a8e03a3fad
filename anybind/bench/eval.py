"""Evaluation throughput: items/s per modality through ``anybind-eval``'s benchmark path, with the tiny towers.

    python -m anybind.bench.eval                      # every modality, workers 0 and 2, files in a temp folder
    python -m anybind.bench.eval --workers 0,2 --n 64 --json eval.json --markdown docs/x.md

Files of benchmark-like sizes are generated once (``--workdir``): ESC-50-like 5 s 44.1 kHz WAVs, COCO-like
640x480 JPEGs, MSR-VTT-like 10 s 320x240 MPEG-4 videos, ModelNet-like OFF meshes (a 2k-face sphere), laid out as
two class folders each; :func:`anybind.eval.run.run_benchmark` classifies them (``benchmark=folder``) and its
``timing.items_per_s`` (decode + transform + tower, batch 32) is reported, with the captions rate of the text tower.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .common import environment, load, parse_list, print_table, write_json

SIZES = {"audio": 64, "image": 64, "video": 16, "points": 64}


def _audio(path: Path, k: int) -> None:
    import soundfile as sf

    sr, n = 44100, 5 * 44100
    t = np.arange(n) / sr
    rng = np.random.default_rng(k)
    wave = 0.3 * np.sin(2 * np.pi * (300 + 40 * k) * t) + 0.05 * rng.standard_normal(n)
    sf.write(str(path), wave.astype(np.float32), sr)


def _image(path: Path, k: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(k)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x * 255 // 639, y * 255 // 479, np.full_like(x, 37 * k % 255)], -1)
    arr = np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _video(path: Path, k: int) -> None:
    import av

    rng = np.random.default_rng(k)
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=15)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for f in range(150):
            arr = np.full((240, 320, 3), (20 + 3 * f + 40 * k) % 255, np.uint8)
            arr[::8] = rng.integers(0, 255, arr[::8].shape, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _points(path: Path, k: int) -> None:
    lat, lon = np.meshgrid(np.linspace(0, np.pi, 33), np.linspace(0, 2 * np.pi, 33), indexing="ij")
    r = 1.0 + 0.1 * np.sin(3 * lon + k)
    v = np.stack([r * np.sin(lat) * np.cos(lon), r * np.sin(lat) * np.sin(lon), np.cos(lat) * (1 + 0.02 * k)], -1)
    v = v.reshape(-1, 3)
    idx = np.arange(33 * 33).reshape(33, 33)
    faces = np.concatenate([np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3),
                            np.stack([idx[:-1, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 3)])
    lines = ["OFF", f"{len(v)} {len(faces)} 0"] + [f"{a:.5f} {b:.5f} {c:.5f}" for a, b, c in v]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


WRITERS = {"audio": (_audio, ".wav"), "image": (_image, ".jpg"), "video": (_video, ".mp4"), "points": (_points, ".off")}


def make_folders(root: Path, modality: str, n: int) -> Path:
    """``root/<modality>/{class_a,class_b}/<k>.<ext>``: ``n`` generated files (reused when already there)."""
    write, ext = WRITERS[modality]
    base = root / f"{modality}-{n}"
    done = base / ".complete"
    if not done.exists():
        for k in range(n):
            folder = base / ("class_a" if k % 2 == 0 else "class_b")
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / f"{k:04d}{ext}", k)
        done.write_text("ok")
    return base


def run_suite(*, workdir: Path, modalities: list[str], workers: list[int], n: int | None = None,
              batch_size: int = 32, captions: int = 2000) -> list[dict]:
    import anybind
    from anybind.eval.benchmarks import load_benchmark
    from anybind.eval.run import run_benchmark

    torch.manual_seed(0)
    rows = []
    for m in modalities:
        if m == "text":
            continue
        count = n or SIZES[m]
        t0 = time.perf_counter()
        root = make_folders(workdir, m, count)
        gen_s = time.perf_counter() - t0
        model = anybind.create_model([m, "text"])
        data = load_benchmark("folder", root, modality=m)
        run_benchmark(model, data, batch_size=batch_size, num_workers=0)  # warm-up: imports, tokenizer
        for w in workers:
            r = run_benchmark(model, data, batch_size=batch_size, num_workers=w)
            rows.append({"modality": m, "items": len(data.items), "workers": w,
                         "items_per_s": r["timing"]["items_per_s"], "embed_s": r["timing"]["embed_s"],
                         "total_s": r["timing"]["total_s"], "encoder": model.encoder_spec()[m]["name"],
                         "generate_s": gen_s, "load": load()})
    if "text" in modalities:
        model = anybind.create_model(["text"])
        texts = [f"a caption number {i} about a dog and a cat on a bench" for i in range(captions)]
        model.embed({"text": texts[:64]})  # warm-up
        for w in workers:
            t0 = time.perf_counter()
            model.embed({"text": texts}, batch_size=256, num_workers=w, progress=False)
            s = time.perf_counter() - t0
            rows.append({"modality": "text", "items": captions, "workers": w, "items_per_s": captions / s,
                         "embed_s": s, "total_s": s, "encoder": model.encoder_spec()["text"]["name"], "load": load()})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m anybind.bench.eval", description=__doc__.splitlines()[0])
    ap.add_argument("--modalities", help="comma list (default audio,image,video,points,text)")
    ap.add_argument("--workers", default="0,2", help="DataLoader workers to compare (default 0,2)")
    ap.add_argument("--n", type=int, help="files per modality (default: audio/image/points 64, video 16)")
    ap.add_argument("--threads", type=int, help="torch threads (default: every core)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "anybind-bench-eval"))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="also append the table to this file")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    env = environment(torch.device("cpu"))
    rows = run_suite(workdir=Path(a.workdir), modalities=parse_list(a.modalities, ("audio", "image", "video", "points",
                                                                                   "text")),
                     workers=[int(w) for w in parse_list(a.workers, ("0", "2"))], n=a.n)
    table = print_table("Evaluation throughput (anybind-eval benchmark path, tiny towers, batch 32; text batch 256)",
                        [("modality", "modality"), ("encoder", "tower"), ("items", "items"), ("workers", "workers"),
                         ("items_per_s", "items/s"), ("embed_s", "embed s"), ("load", "load")], rows, env)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(table + "\n")
    out = {"environment": env, "rows": rows}
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
