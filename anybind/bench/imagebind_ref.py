"""anybind against ImageBind's own code, on the same random weights: ``tools/bench_imagebind.py --imagebind-src PATH``.

``PATH`` is a local checkout of ImageBind's repository (the folder holding ``imagebind/models/imagebind_model.py``);
nothing is downloaded and no ImageBind code ships with anybind. The comparison:

1. a child process imports ImageBind's model from ``PATH``, builds ``imagebind_huge(pretrained=False)`` under a fixed
   seed and saves its state dict: the one set of weights both sides run (the head counts are read from its
   ``nn.MultiheadAttention`` layers and passed to :func:`anybind.compat.load_imagebind`);
2. for every modality and batch, ``rounds`` interleaved pairs of fresh processes (ImageBind's forward, then
   anybind's; the order alternates between rounds) each time one warm-up and ``repeats`` timed forwards under
   ``torch.inference_mode`` on the same seeded input (shaped as ImageBind's preprocessing makes it);
3. the ratio of the medians (ImageBind / anybind: above 1 means anybind is faster) and the parity of the outputs
   (max absolute difference, min cosine of the unit vectors: ImageBind scales its text, audio, depth, thermal and
   imu outputs by their logit scales).

Without ``--imagebind-src`` the ImageBind-size benchmark measures anybind alone (:mod:`anybind.bench.imagebind`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import parity, sig

# anybind modality -> ImageBind's input / output key (a video is ImageBind's vision input with clips and frames)
IMAGEBIND_KEYS = {"image": "vision", "video": "vision", "text": "text", "audio": "audio", "depth": "depth",
                  "thermal": "thermal", "imu": "imu"}


def import_imagebind(src: str | Path, module: str = "imagebind.models.imagebind_model"):
    """ImageBind's model module from the source tree ``src`` (put first on ``sys.path``)."""
    src = Path(src).expanduser().resolve()
    if not (src / Path(*module.split(".")[:-1]) / (module.split(".")[-1] + ".py")).is_file():
        raise SystemExit(f"--imagebind-src {src}: no {module.replace('.', '/')}.py there; give the folder of a "
                         "checkout of ImageBind's repository")
    sys.path.insert(0, str(src))
    import importlib

    return importlib.import_module(module)


def _heads(model) -> dict[str, int]:
    out = {}
    for key, trunk in getattr(model, "modality_trunks", {}).items():
        mha = next((m for m in trunk.modules() if isinstance(m, torch.nn.MultiheadAttention)), None)
        if mha is not None:
            out[key] = int(mha.num_heads)
    return out


def _timed(fn, repeats: int) -> tuple[torch.Tensor, list[float]]:
    with torch.inference_mode():
        out = fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return out.detach().float().cpu(), times


def child(mode: str, src: str, work: str, builder: str, modality: str = "", batch: int = 0, repeats: int = 0,
          threads: int = 0) -> dict:
    """One fresh process: ``write`` the shared weights, or time ``imagebind`` / ``anybind`` on one input."""
    from anybind.compat.imagebind import load_imagebind

    from .imagebind_inputs import sample_input

    if threads:
        torch.set_num_threads(threads)
    work = Path(work)
    pth = work / "imagebind_random.pth"
    if mode == "write":
        ib = import_imagebind(src)
        torch.manual_seed(0)
        model = getattr(ib, builder)(pretrained=False)
        torch.save(model.state_dict(), pth)
        heads = _heads(model)
        ours = load_imagebind(pth, num_heads=heads, mmap=False)
        contracts = {m: dict(t.input_contract) for m, t in ours.encoders.items()}
        info = {"heads": heads, "contracts": contracts, "bytes": pth.stat().st_size}
        (work / "setup.json").write_text(json.dumps(info, default=str))
        return info
    info = json.loads((work / "setup.json").read_text())
    x = sample_input(modality, info["contracts"][modality], batch)
    key = IMAGEBIND_KEYS[modality]
    if mode == "imagebind":
        ib = import_imagebind(src)
        model = getattr(ib, builder)(pretrained=False)
        model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
        model.eval()
        out, times = _timed(lambda: model({key: x})[key], repeats)
    elif mode == "anybind":
        model = load_imagebind(pth, num_heads=info["heads"], mmap=False).eval()
        tower = model.encoders[modality]
        out, times = _timed(lambda: tower(x), repeats)
    else:
        raise SystemExit(f"unknown mode {mode}")
    torch.save(out, work / f"{mode}-{modality}-{batch}.pt")
    return {"median_s": statistics.median(times), "min_s": min(times)}


def _run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "anybind.bench.imagebind_ref", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmark child {args[:1]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(src: str | Path, work: str | Path, modalities: list[str], batches: list[int], *, rounds: int = 3,
            repeats: int = 2, builder: str = "imagebind_huge", threads: int = 0, log=print) -> list[dict]:
    """Rows per modality and batch: ImageBind's and anybind's median seconds over ``rounds`` interleaved fresh
    processes, their ratio and the parity of the outputs."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    common = [str(src), str(work), builder]
    info = _run_child(["write", *common])
    log(json.dumps({"weights_bytes": info["bytes"], "heads": info["heads"]}))
    rows = []
    try:
        for m in modalities:
            if m not in info["contracts"]:
                log(f"skipping {m}: the model has no such tower ({sorted(info['contracts'])})")
                continue
            for b in batches:
                runs: dict[str, list[float]] = {"imagebind": [], "anybind": []}
                for r in range(rounds):
                    for side in (("imagebind", "anybind") if r % 2 == 0 else ("anybind", "imagebind")):
                        res = _run_child([side, *common, m, str(b), str(repeats), str(threads)])
                        runs[side].append(res["median_s"])
                # ImageBind's text/audio/... outputs carry its logit scale (|x| = 14.3, 20, ...), anybind's towers
                # return unit vectors: the parity is that of the directions
                ref = F.normalize(torch.load(work / f"imagebind-{m}-{b}.pt", weights_only=True).float(), dim=-1)
                ours = F.normalize(torch.load(work / f"anybind-{m}-{b}.pt", weights_only=True).float(), dim=-1)
                ib, ab = statistics.median(runs["imagebind"]), statistics.median(runs["anybind"])
                row = {"modality": m, "batch": b, "imagebind_s": sig(ib), "anybind_s": sig(ab),
                       "speedup": sig(ib / ab), "imagebind_runs": [sig(t) for t in runs["imagebind"]],
                       "anybind_runs": [sig(t) for t in runs["anybind"]], "rounds": rounds, **parity(ref, ours)}
                log(json.dumps(row))
                rows.append(row)
    finally:
        for p in work.glob("*.pt*"):
            p.unlink(missing_ok=True)
    return rows


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "write":
        print(json.dumps(child("write", *rest)))
    else:
        src, work, builder, modality, batch, repeats, threads = rest
        print(json.dumps(child(mode, src, work, builder, modality, int(batch), int(repeats), int(threads))))
