"""The command line as a user meets it: ``anybind-embed`` throughput on real files, ``anybind-search`` start-up.

``python -m anybind.bench.cli --work /tmp/clibench [--data ../shared/data] [--precision auto,fp32]`` prepares (once)
in ``--work``:

* ``jpg/``: 300 COCO-size JPEGs (640x480 and 480x640, quality 92, about 136 KB each), frames of the shared Big Buck
  Bunny clip with photographic grain added (animation alone compresses far better than photographs);
* ``fsdd/``: 600 Free Spoken Digit recordings (every 5th file of ``fsdd/recordings``, 8 kHz WAV);
* ``captions.jsonl``: 10,000 COCO-style captions (about 10 words each);
* ``tiny``: the default tiny towers (``anybind.create_model()``) saved as a checkpoint;
* ``index100k/``: a 100,000-vector index (40k image, 30k text, 20k audio, 10k points) recording that checkpoint;

then runs, each in a fresh process as a user would: ``anybind-embed`` over each collection (items/s excluding
start-up, start-up, the read / transform / tower shares the summary reports), ``anybind-search --help``, and one
text query against the 100k index. It prints a markdown table with the machine, date and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUMMARY = re.compile(r"this run: .*?, ([\d.]+) s, (\d+) items/s \(read (\d+)%, transform (\d+)%, tower (\d+)% of the "
                     r"work\); (\w+), (\d+) workers?")
PROGS = {"embed": "embed_main", "search": "search_main"}


def _cli(command: str, *args: str, env: dict | None = None, timeout: float = 3600) -> tuple[subprocess.CompletedProcess, float]:
    entry = PROGS[command]
    code = f"import sys; from anybind.cli import {entry}; sys.argv[0] = 'anybind-{command}'; {entry}()"
    root = Path(__file__).resolve().parents[2]
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), **(env or {}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full,
                          timeout=timeout)
    return proc, time.perf_counter() - t0


def prepare(work: Path, data: Path) -> dict[str, Path]:
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    out = {"jpg": work / "jpg", "fsdd": work / "fsdd", "captions": work / "captions.jsonl",
           "model": work / "tiny.safetensors", "index": work / "index100k"}
    if not out["jpg"].is_dir():
        _jpegs(data / "video" / "big_buck_bunny_0_30.webm", out["jpg"])
    if not out["fsdd"].is_dir():
        wavs = sorted((data / "fsdd" / "recordings").glob("*.wav"))[::5][:600]
        out["fsdd"].mkdir()
        for w in wavs:
            shutil.copyfile(w, out["fsdd"] / w.name)
    if not out["captions"].is_file():
        _captions(out["captions"], 10_000)
    if not out["model"].is_file():
        import anybind

        anybind.save_model(work / "tiny", anybind.create_model())
    if not (out["index"] / "index.json").is_file():
        import anybind
        from anybind.retrieval import build_index, write_store
        from anybind.retrieval.embed import model_info

        model = anybind.load(out["model"])
        rng = np.random.default_rng(0)
        mods = ["image"] * 40_000 + ["text"] * 30_000 + ["audio"] * 20_000 + ["points"] * 10_000
        vecs = rng.standard_normal((len(mods), model.embed_dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        meta = [{"id": f"{m}-{i}", "modality": m, "source": f"/data/{m}/{i:06d}" if m != "text" else f"caption {i}"}
                for i, m in enumerate(mods)]
        store = write_store(work / "store100k", vecs, meta, model=model_info(model, out["model"]), overwrite=True)
        build_index(store, kind="auto").save(out["index"])
    return out


def _jpegs(video: Path, folder: Path, n: int = 300) -> None:
    import av
    import numpy as np
    from PIL import Image

    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i % 2 == 0]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for k in range(n):
        img = Image.fromarray(frames[(k * 997) % len(frames)]).resize((854, 480), Image.BICUBIC).crop((107, 0, 747, 480))
        a = np.asarray(img).astype(np.float32) + rng.normal(0, 12, (480, 640, 3))  # photographic grain
        if k % 5 == 4:
            a = a.transpose(1, 0, 2)  # portrait
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{k:04d}.jpg", quality=92)


def _captions(path: Path, n: int) -> None:
    import random

    subj = ["a man", "a woman", "two dogs", "a young boy", "a cat", "a group of people", "a red bus", "an old truck",
            "a little girl", "a brown horse", "three birds", "a plate of food", "a skateboarder", "a tennis player"]
    verb = ["standing next to", "sitting on", "walking down", "riding", "looking at", "playing with", "parked near",
            "running across", "holding", "lying on"]
    obj = ["a wooden bench", "the busy street", "a large field", "a kitchen counter", "the beach", "a snowy hill",
           "a white wall", "a green park", "the train station", "a small table", "a city sidewalk"]
    tail = ["", " on a sunny day", " in the rain", " at night", " with trees behind", " near the water", ""]
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            cap = f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}{rng.choice(tail)}"
            f.write(json.dumps({"id": f"cap{i:05d}", "text": cap[0].upper() + cap[1:] + "."}) + "\n")


def embed_row(name: str, source: Path, model: Path, work: Path, precision: str, extra=()) -> dict:
    out = work / f"store-{name}-{precision}"
    proc, wall = _cli("embed", f"input={source}", f"out={out}", f"model.checkpoint={model}", "overwrite=true",
                      "progress=false", "index.build=false", f"precision={precision}", *extra)
    if proc.returncode != 0:
        raise RuntimeError(f"anybind-embed {name} failed: {proc.stderr[-2000:]}")
    m = SUMMARY.search(proc.stdout)
    if m is None:
        raise RuntimeError(f"no summary line in: {proc.stdout[-2000:]}")
    seconds, rate, read, transform, tower, prec, workers = m.groups()
    n = sum(json.loads(p.read_text())["count"] for p in (out / "shards").glob("*.done.json"))
    return {"collection": name, "items": n, "precision": prec, "workers": int(workers), "items_per_s": int(rate),
            "embed_s": float(seconds), "startup_s": round(wall - float(seconds), 1), "wall_s": round(wall, 1),
            "read": int(read), "transform": int(transform), "tower": int(tower), "load": os.getloadavg()[0]}


def search_rows(index: Path) -> list[dict]:
    rows = []
    proc, wall = _cli("search", "--help")
    rows.append({"what": "anybind-search --help", "wall_s": round(wall, 2), "load": os.getloadavg()[0]})
    proc, wall = _cli("search", "--index", str(index), "-q", "a dog barking on the beach", "-k", "5")
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rows.append({"what": "anybind-search, one text query, 100k-item index, cold process", "wall_s": round(wall, 2),
                 "load": os.getloadavg()[0]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    from ..cli import ArgumentParser

    root = Path(__file__).resolve().parents[2]
    ap = ArgumentParser(prog="python -m anybind.bench.cli", description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/anybind-clibench", help="data, checkpoint, index and stores")
    ap.add_argument("--data", default=str(root.parent / "shared" / "data"), help="../shared/data")
    ap.add_argument("--precision", default="auto,fp32", help="anybind-embed precisions to run, comma-separated")
    ap.add_argument("--only", default="jpg,fsdd,captions,search", help="what to run, comma-separated")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    work = Path(a.work)
    paths = prepare(work, Path(a.data))
    only = a.only.split(",")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    report = {"machine": f"{cpu}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": " ".join(["python -m anybind.bench.cli", *(argv if argv is not None else sys.argv[1:])]),
              "embed": [], "search": []}
    print(f"{report['machine']}, {report['date']}, load average {os.getloadavg()}", flush=True)
    for name in ("jpg", "fsdd", "captions"):
        if name not in only:
            continue
        for precision in a.precision.split(","):
            row = embed_row(name, paths[name], paths["model"], work, precision)
            report["embed"].append(row)
            print(f"| {name} | {row['items']} | {row['precision']} | {row['workers']} | **{row['items_per_s']}** | "
                  f"{row['embed_s']} | {row['startup_s']} | {row['read']}% / {row['transform']}% / {row['tower']}% | "
                  f"{row['load']:.1f} |", flush=True)
    if "search" in only:
        for row in search_rows(paths["index"]):
            report["search"].append(row)
            print(f"| {row['what']} | {row['wall_s']} s | {row['load']:.1f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    from ..cli import run_command

    run_command("python -m anybind.bench.cli", main)
