"""Record the CUDA rows of docs/benchmarks.md in one call on a lent GPU (a hard deadline, default 8 minutes).

    python tools/gpu_rows.py --out $OUT              # on the GPU machine: every row, within --budget seconds
    python tools/gpu_rows.py --device cpu --quick    # a smoke run of the same steps here (tiny sizes, seconds)

Rows, each an ``anybind-bench`` suite in its own process (a crash or a hang costs one row, never the call):

1. training fwd+bwd throughput and MFU in bf16 at ``small`` and ``base``, without and with ``torch.compile``
   (``anybind-bench encoders --precision bf16 [--compile]``: FLOP/s against the device's measured matmul peak);
2. training steps of the world preset in bf16 (``anybind-bench train``);
3. embedding throughput of an OpenCLIP ViT-B/32 image tower in fp32 and bf16 (``anybind-bench encoders
   --encoders openclip_image``: random weights open_clip builds offline);
4. an ImageBind-huge forward per modality at batch 1 and 8 (``anybind-bench imagebind``).

Every row writes its JSON and Markdown under ``--out``; ``summary.json`` lists what ran, what was skipped because
the deadline was near, and each row's exit status and seconds. Rows run in the order above, most wanted first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rows(device: str, quick: bool, out: Path) -> list[tuple[str, list[str], int]]:
    """(name, argv, expected seconds) per row; ``quick`` shrinks every row to a smoke run."""
    bench = [sys.executable, "-m", "anybind.bench"]
    q = ["--quick"] if quick else []
    sizes = "test" if quick else "small,base"
    enc = ["encoders", "--device", device, "--sizes", sizes, "--precision", "bf16", "--rounds", "1" if quick else "3"]
    if quick:
        enc += ["--modalities", "image,text"]
    spec = [
        ("encoders_bf16", [*bench, *enc, *q], 60),
        ("encoders_bf16_compile", [*bench, *enc, "--compile", *q], 120),
        ("train_world_bf16", [*bench, "train", "--device", device, "--precision", "bf16", "--presets", "world",
                              "--sizes", "test" if quick else "tiny", *q], 90),
        ("openclip_vit_b32_embed", [*bench, "encoders", "--device", device, "--encoders", "openclip_image",
                                    *(["--precision", "fp32", "--batch", "1"] if quick else ["--precision", "fp32,bf16"]),
                                    "--rounds", "1" if quick else "3", *q], 60),
        ("imagebind_huge", [*bench, "imagebind", "--device", device, "--sizes", "test" if quick else "huge", *q], 120),
    ]
    rows = []
    for name, argv, secs in spec:
        rows.append((name, [*argv, "--json", str(out / f"{name}.json"), "--markdown", str(out / f"{name}.md")], secs))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_rows", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_rows"), help="folder for the results ($OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole call (default 480)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes (for a CPU check of the script itself)")
    ap.add_argument("--only", help="comma list of row names")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary: dict = {"device": a.device, "budget_s": a.budget, "rows": []}
    wanted = set(a.only.split(",")) if a.only else None
    for name, cmd, expected in rows(a.device, a.quick, out):
        if wanted and name not in wanted:
            continue
        left = a.budget - (time.monotonic() - start)
        if left < min(expected, a.budget) * 0.5:
            summary["rows"].append({"name": name, "status": "skipped: deadline near", "left_s": round(left, 1)})
            continue
        t0 = time.monotonic()
        print(f"[gpu_rows] {name}: {' '.join(cmd)}", flush=True)
        with open(out / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        summary["rows"].append({"name": name, "status": rc, "seconds": round(time.monotonic() - t0, 1)})
        print(f"[gpu_rows] {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
    summary["total_s"] = round(time.monotonic() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if all(r["status"] == 0 for r in summary["rows"] if isinstance(r["status"], int)) else 1


if __name__ == "__main__":
    sys.exit(main())
