"""``anybind-embed`` on real files: photographic JPEGs, FSDD recordings and captions through the tiny towers.

``python tools/bench_embed_files.py --data /tmp/anybind-embed-bench`` prepares what it measures, outside the
repository: ~500 640x360 JPEGs (quality 90) decoded from the frames of a video, 20,000 captions made from word
lists, and saved random-weight models: ``image_vit_tiny``, ``text_transformer_tiny``, ``audio_vit_tiny`` (the
ImageBind audio contract) and the digits recipe's audio tower (``conf/experiment/digits.yaml``: 8 kHz, one 1 s
clip, 32 mel bins x 100 frames). Each case is then run as a fresh ``anybind-embed`` process, cases interleaved
``--repeats`` times, and the table gives the median items/s over the run itself (the command's own clock), its
read / transform / tower shares, and the start-up (the whole wall time less the run) separately.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import environment, load, parse_list, print_table, write_json

ADJECTIVES = ("red small large wooden shiny old young happy fluffy striped tall empty busy quiet bright dark wet "
              "sandy snowy green").split()
NOUNS = ("dog cat man woman child bus train bicycle car horse bird table kitchen street beach pizza plate boat "
         "clock tree surfer skateboard giraffe elephant laptop").split()
VERBS = "sitting standing running walking lying parked riding jumping eating looking waiting flying".split()
PLACES = ("a field", "a city street", "the beach", "a kitchen counter", "a wooden table", "the snow", "a grassy hill",
          "a busy road", "the water", "a living room", "a train station", "a park bench")
SUMMARY = re.compile(r"this run: .*?, ([\d.]+) s(?:, (\d+) items/s)?(?: \(read (\d+)%, transform (\d+)%, "
                     r"tower (\d+)% of the work\))?")


def make_captions(path: Path, n: int = 20_000, seed: int = 0) -> Path:
    """``n`` varied COCO-like captions (a JSONL manifest ``{"id", "text"}``), the same for the same seed."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            s = (f"{rng.choice(['A', 'The', 'Two', 'Some', 'An old'])} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} "
                 f"{rng.choice(VERBS)} {rng.choice(['on', 'near', 'beside', 'under', 'behind', 'in'])} "
                 f"{rng.choice(PLACES)}")
            if rng.random() < 0.5:
                s += f" with a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
            if rng.random() < 0.3:
                s += f" while a {rng.choice(NOUNS)} is {rng.choice(VERBS)} nearby"
            f.write(json.dumps({"id": f"cap{i:05d}", "text": s + "."}) + "\n")
    return path


def make_jpegs(video: Path, folder: Path, n: int = 500, size: tuple[int, int] = (640, 360),
               quality: int = 90) -> Path:
    """The first ``n`` frames of ``video`` as ``size`` JPEGs (photographic content at COCO size)."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    with av.open(str(video)) as container:
        for frame in container.decode(container.streams.video[0]):
            if done >= n:
                break
            image = frame.to_image().convert("RGB").resize(size, Image.BICUBIC)
            image.save(folder / f"frame_{done:04d}.jpg", quality=quality)
            done += 1
    if done == 0:
        raise ValueError(f"{video}: no video frames decoded")
    return folder


def digits_audio_spec() -> dict:
    """The digits recipe's audio tower: the tiny audio builder with ``conf/experiment/digits.yaml``'s kwargs."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    exp = OmegaConf.load(str(files("conf") / "experiment" / "digits.yaml"))
    return {"name": "audio_vit_tiny", **OmegaConf.to_container(exp.modality.audio.kwargs)}


def model_specs() -> dict[str, dict]:
    return {"image": {"image": "image_vit_tiny"}, "text": {"text": "text_transformer_tiny"},
            "audio": {"audio": "audio_vit_tiny"}, "digits_audio": {"audio": digits_audio_spec()}}


def save_models(folder: Path, cases=None, seed: int = 0) -> dict[str, Path]:
    """Random-weight checkpoints of the cases' towers (throughput does not depend on the weights)."""
    import torch

    import anybind

    out = {}
    for case, spec in model_specs().items():
        if cases is None or case in cases:
            torch.manual_seed(seed)
            out[case] = anybind.save_model(folder / f"{case}.safetensors", anybind.create_model(spec))
    return out


def parse_summary(stdout: str) -> dict:
    """The run's seconds, items/s and shares from ``anybind-embed``'s summary line."""
    m = SUMMARY.search(stdout)
    if not m:
        raise ValueError(f"no summary line in anybind-embed's output:\n{stdout[-2000:]}")
    seconds, rate, *shares = m.groups()
    out = {"run_s": float(seconds), "items_per_s": float(rate) if rate else 0.0}
    if shares[0] is not None:
        out.update(read=int(shares[0]) / 100, transform=int(shares[1]) / 100, tower=int(shares[2]) / 100)
    return out


def run_embed(input_path: Path, checkpoint: Path, out: Path, *args: str, code_path: str | None = None) -> dict:
    """One fresh ``anybind-embed`` process: its summary, whole wall time and start-up (wall time less the run).
    ``code_path``: a source tree to import anybind from (``PYTHONPATH``), to compare two versions."""
    code = "import sys; from anybind.retrieval.cli import embed_main; sys.argv[0] = 'anybind-embed'; embed_main()"
    cmd = [sys.executable, "-c", code, f"input={input_path}", f"out={out}", f"model.checkpoint={checkpoint}",
           "overwrite=true", "progress=false", "index.build=false", *args]
    before, t0 = load(), time.perf_counter()
    env = dict(os.environ, PYTHONPATH=code_path) if code_path else dict(os.environ)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"anybind-embed failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    row = parse_summary(proc.stdout)
    return {**row, "wall_s": wall, "startup_s": wall - row["run_s"], "load": max(before, load())}


def run(data: Path, cases: list[str], settings: list[tuple[str, str]], repeats: int, extra: list[str],
        trees: dict[str, str] | None = None, log=print) -> dict:
    """Every case under every ``(tree, num_workers)`` setting, ``repeats`` times interleaved; ``trees`` maps a
    name to a source tree (``""``: the anybind this process imports)."""
    trees = trees or {"": ""}
    video = Path(os.environ.get("ANYBIND_BENCH_VIDEO", "/work/shared/data/video/big_buck_bunny_0_30.webm"))
    fsdd = Path(os.environ.get("ANYBIND_BENCH_FSDD", "/work/shared/data/fsdd/recordings"))
    inputs = {"audio": fsdd, "digits_audio": fsdd}
    if "image" in cases:
        inputs["image"] = data / "jpegs" if (data / "jpegs").is_dir() else make_jpegs(video, data / "jpegs")
    if "text" in cases:
        path = data / "captions.jsonl"
        inputs["text"] = path if path.exists() else make_captions(path)
    models = save_models(data / "models", cases)
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for rep in range(repeats):  # interleaved, so a change of load on the machine falls on every case alike
        for case in cases:
            for tree, w in settings:
                r = run_embed(inputs[case], models[case], data / "stores" / case, f"num_workers={w}", *extra,
                              code_path=trees[tree])
                runs.setdefault((case, tree, w), []).append(r)
                log(f"{case} {tree} num_workers={w} #{rep + 1}: {r['items_per_s']:.0f} items/s, start-up "
                    f"{r['startup_s']:.1f} s, load {r['load']}")
    rows = []
    for (case, tree, w), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs if k in r) for k in rs[0]}
        rows.append({"case": case, "tree": tree, "workers": w, "runs": len(rs), **med,
                     "all_items_per_s": [round(r["items_per_s"]) for r in rs]})
    import torch

    env = {**environment(torch.device("cpu")), "extra": " ".join(extra)}
    return {"env": env, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m anybind.bench.embed_files", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/anybind-embed-bench"), help="prepared inputs and models")
    p.add_argument("--cases", default="image,text,audio,digits_audio")
    p.add_argument("--workers", default="auto", help="num_workers settings to compare (comma list); TREE:WORKERS "
                                                    "runs one setting with a --tree")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="a source tree to import anybind from, to compare versions (repeatable)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("extra", nargs="*", help="more anybind-embed overrides (e.g. precision=bf16)")
    a = p.parse_args(argv)
    trees = {"": "", **dict(t.split("=", 1) for t in a.tree)}
    settings = [tuple(w.split(":", 1)) if ":" in w else ("", w) for w in parse_list(a.workers, ["auto"])]
    result = run(a.data, parse_list(a.cases, []), settings, a.repeats, a.extra, trees)
    cols = [("case", "case"), ("tree", "code"), ("workers", "num_workers"), ("items_per_s", "items/s (median)"),
            ("all_items_per_s", "runs"), ("read", "read"), ("transform", "transform"), ("tower", "tower"),
            ("startup_s", "start-up s"), ("load", "load")]
    print_table("anybind-embed on real files (run only; start-up apart)", cols, result["rows"], result["env"])
    if a.out:
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
