"""Files -> embeddings throughput of an OpenCLIP tower: anybind against the plain open_clip loop a user writes.

Same run, same files, same weights (a random-weight open_clip model saved as a local file, as a user's
checkpoint would be): photo-sized JPEGs are generated once, then each contender embeds all of them, alternately,
``--repeats`` times (the best time is kept; every figure carries the load average, the machine being shared):

* ``open_clip loop``: ``preprocess(Image.open(p))`` per file, ``torch.stack`` per batch, ``encode_image`` under
  ``no_grad``, normalized (and ``tokenizer(batch)`` + ``encode_text`` for texts);
* ``anybind embed``: ``anybind.from_open_clip(...).embed({"image": paths})``, ``num_workers`` DataLoader workers;
* ``anybind-embed``: :func:`anybind.retrieval.embed.embed_to_store` over the folder (what the ``anybind-embed``
  command runs: planning, shards and the store on disk included).

``python -m anybind.bench.openclip --model ViT-B-32 --images 256 --workers 0,2 --out docs/benchmarks/x.json``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .common import environment, load, parse_list, print_table, sig, write_json

CAPTION_WORDS = "a photo of the small red dog cat car tree house on beach street near two blue green".split()


def write_photos(folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``n`` JPEG photos of ``size`` (smooth colour fields plus noise: a realistic decode and resize cost)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        base = np.stack([np.sin(xx / w * a * 6), np.cos(yy / h * b * 6), np.sin((xx + yy) / (w + h) * c * 6)], -1)
        pix = np.clip((base * 0.5 + 0.5) * 255 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"img_{i:05d}.jpg")
        Image.fromarray(pix).save(paths[-1], quality=90)
    return paths


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(CAPTION_WORDS, size=int(rng.integers(4, 12)))) for _ in range(n)]


def open_clip_image_loop(model, preprocess, paths, batch: int) -> torch.Tensor:
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([preprocess(Image.open(p)) for p in paths[i:i + batch]])
            out.append(F.normalize(model.encode_image(x), dim=-1))
    return torch.cat(out)


def open_clip_text_loop(model, tokenizer, texts, batch: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            out.append(F.normalize(model.encode_text(tokenizer(texts[i:i + batch])), dim=-1))
    return torch.cat(out)


def _best(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor, float]:
    best, out, loads = float("inf"), None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        loads.append(load())
    return best, out, max(loads)


def run(model_name: str = "ViT-B-32", images: int = 256, texts: int = 1024, batch: int = 32,
        workers: list[int] = (0, 2), repeats: int = 2, threads: int | None = None, memory: bool = False) -> dict:
    import open_clip
    from safetensors.torch import save_file

    import anybind
    from anybind.retrieval.embed import embed_to_store

    if threads:
        torch.set_num_threads(threads)
    env = environment(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths = write_photos(tmp / "images", images)
        texts_ = captions(texts)
        ref, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
        ref.eval()
        tokenizer = open_clip.get_tokenizer(model_name)
        weights = tmp / "clip.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
        model = anybind.from_open_clip(model_name, pretrained=weights)
        open_clip_image_loop(ref, preprocess, paths[:batch], batch)  # warm up both paths
        model.embed({"image": paths[:batch]}, batch_size=batch)

        def image_row(name, workers_, fn):
            seconds, out, ld = _best(fn, repeats)
            rows.append({"what": "image", "path": name, "workers": workers_, "n": images, "seconds": sig(seconds),
                         "per_s": sig(images / seconds), "load": ld, "_out": out})

        image_row("open_clip loop", 0, lambda: open_clip_image_loop(ref, preprocess, paths, batch))
        for w in workers:
            image_row("anybind embed", w, lambda w=w: model.embed({"image": paths}, batch_size=batch, num_workers=w,
                                                                  progress=False)["image"])
            image_row("anybind-embed (store)", w, lambda w=w: _store(embed_to_store, model, tmp, w, batch))
        if memory:
            ckpt = anybind.save_model(tmp / "ckpt" / "model", model)
            mem = memory_rows(model_name, weights, ckpt)
        for name, fn in (("open_clip loop", lambda: open_clip_text_loop(ref, tokenizer, texts_, 256)),
                         ("anybind embed", lambda: model.embed({"text": texts_}, batch_size=256, progress=False)["text"])):
            seconds, out, ld = _best(fn, repeats)
            rows.append({"what": "text", "path": name, "workers": 0, "n": texts, "seconds": sig(seconds),
                         "per_s": sig(texts / seconds), "load": ld, "_out": out})
    for what in ("image", "text"):
        ref_out = next(r["_out"] for r in rows if r["what"] == what and r["path"] == "open_clip loop")
        for r in rows:
            if r["what"] == what and r["_out"] is not None:
                r["max_abs_diff"] = float((r["_out"] - ref_out).abs().max())
    for r in rows:
        r.pop("_out")
    return {"env": env, "model": model_name, "batch": batch, "rows": rows, "memory": mem if memory else []}


def _store(embed_to_store, model, tmp: Path, workers: int, batch: int) -> torch.Tensor:
    out = tmp / f"store_{time.perf_counter_ns()}"
    summary = embed_to_store(model, tmp / "images", out, modality="image", batch_size=batch, num_workers=workers,
                             progress=False)
    store = summary.store
    sources = [str(m.get("source", m.get("id"))) for m in store.metadata()]
    return torch.from_numpy(np.asarray(store.vectors(), dtype=np.float32)[np.argsort(sources)])


_MEMORY_PROBE = r"""
import sys, time
import torch, anybind, open_clip

def hwm():  # this process's peak RSS in GiB (VmHWM: unlike ru_maxrss, not inherited from the parent over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 2**20

what, model_name, path = sys.argv[1:4]
base = hwm()
t0 = time.perf_counter()
if what == "open_clip.create_model(pretrained=file)":
    m = open_clip.create_model(model_name, pretrained=path)
elif what == "anybind.from_open_clip(pretrained=file)":
    m = anybind.from_open_clip(model_name, pretrained=path)
else:
    m = anybind.load(path)
built, seconds = hwm(), time.perf_counter() - t0
with torch.no_grad():  # one forward per tower pages in every weight (memory-mapped tensors count from here)
    image, ids = torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)
    if hasattr(m, "encode_image"):
        m.encode_image(image), m.encode_text(ids)
    else:
        m.encoders["image"](image), m.encoders["text"](ids)
print(base, built, hwm(), seconds)
"""


def memory_rows(model_name: str, weights: Path, checkpoint: Path) -> list[dict]:
    """Peak RSS of building the model from a file, each way in a fresh process (``VmHWM``, GiB)."""
    import subprocess
    import sys

    rows = []
    for what, path in (("open_clip.create_model(pretrained=file)", weights),
                       ("anybind.from_open_clip(pretrained=file)", weights), ("anybind.load(checkpoint)", checkpoint)):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, what, model_name, str(path)], capture_output=True,
                             text=True, check=True, timeout=600).stdout.split()
        base, built, peak, seconds = (float(x) for x in out[-4:])
        rows.append({"what": what, "file_gib": sig(path.stat().st_size / 2**30, 3), "start_gib": sig(base, 3),
                     "built_gib": sig(built - base, 3), "added_gib": sig(peak - base, 3), "seconds": sig(seconds, 3),
                     "load": load()})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m anybind.bench.openclip", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--texts", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", default="0,2", help="DataLoader workers for the anybind paths (comma list)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory", action="store_true", help="also peak RSS of loading the weights, each way")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    result = run(a.model, a.images, a.texts, a.batch, [int(w) for w in parse_list(a.workers, ["0"])], a.repeats, a.threads,
                 a.memory)
    cols = [("what", "input"), ("path", "path"), ("workers", "workers"), ("n", "n"), ("seconds", "s"),
            ("per_s", "items/s"), ("max_abs_diff", "max |diff| vs loop"), ("load", "load")]
    print_table(f"OpenCLIP {a.model} files -> embeddings (batch {a.batch})", cols, result["rows"], result["env"])
    if result["memory"]:
        mcols = [("what", "build"), ("file_gib", "file GiB"), ("start_gib", "RSS before GiB"), ("seconds", "build s"),
                 ("built_gib", "peak added by the build GiB"), ("added_gib", "... and by one forward GiB"),
                 ("load", "load")]
        print_table(f"Building OpenCLIP {a.model} from a local file: peak memory", mcols, result["memory"])
    if a.out:
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
