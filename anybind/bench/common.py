"""What every benchmark suite shares: the machine record, device timing, synthetic inputs, tables and JSON.

Every figure a suite reports carries the load average beside it (``load``), because on a shared machine a
timing means little without it; the machine record (:func:`environment`) holds the CPU model, thread count,
torch version, device and date.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

# The built-in tower families, one per modality: ``f"{FAMILIES[m]}_{size}"`` is a registry name.
FAMILIES = {"image": "image_vit", "text": "text_transformer", "audio": "audio_vit", "video": "video_vit",
            "points": "points_transformer"}
MODALITIES = tuple(FAMILIES)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> float:
    """The 1-minute load average (how many runnable processes shared the cores while a figure was taken)."""
    return round(os.getloadavg()[0], 2)


def environment(device: torch.device) -> dict:
    """The machine a result was measured on (stored with every suite's JSON and printed above its table)."""
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["anybind-bench" if sys.argv and sys.argv[0].endswith("anybind-bench") else
                             os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        # how idle OpenMP threads wait decides eager CPU speed on a shared machine (docs/benchmarks.md)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device")
    return device


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(peak MiB, what was measured): CUDA max allocated, or this process's max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max RSS"


def synthetic_input(modality: str, contract: dict, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch shaped as ``modality``'s transform makes it under ``contract`` (random values; text: valid ids)."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    c = contract
    if modality == "text":
        length = c["context_length"]
        ids = torch.randint(1, 49406, (batch, length), generator=g)
        eot = min(12, length - 1)
        ids[:, 0], ids[:, eot], ids[:, eot + 1:] = 49406, 49407, 0
        return ids
    size = c.get("image_size", 224)
    shapes = {
        "image": (3, size, size),
        "audio": (c.get("clips", 1), 1, c.get("num_mel_bins", 128), c.get("target_length", 204)),
        "video": (c.get("clips", 1), 3, c.get("frames", 2), size, size),
        "points": (c.get("num_points", 1024), c.get("channels", 3)),
    }
    if modality not in shapes:
        raise ValueError(f"no synthetic input for modality {modality!r} (known: text, {', '.join(shapes)})")
    x = torch.randn((batch, *shapes[modality]), generator=g)
    if modality == "points" and x.shape[-1] == 6:
        x[..., 3:] = x[..., 3:].sigmoid()
    return x


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (tiny test towers and huge GPU rates alike stay readable)."""
    return float(f"{x:.{digits}g}")


def parity(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """Max absolute difference and min cosine of ``out`` against the reference ``ref`` (rows are embeddings)."""
    ref, out = ref.float().flatten(1), out.float().flatten(1)
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=-1)
    return {"max_abs_err": sig(float((ref - out).abs().max())), "min_cosine": round(float(cos.min()), 6)}


def parse_list(value: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v.strip()]


def print_table(title: str, columns: Sequence[tuple[str, str]], rows: Iterable[dict], env: dict | None = None) -> str:
    """A Markdown table of ``rows``; ``columns`` are ``(key, header)`` pairs. Printed, and returned."""
    lines = [f"### {title}"]
    if env:
        lines.append(f"{env['date']} | {env['cpu_model']} | {env['cpu_count']} cores, {env['threads']} threads | "
                     f"OMP_WAIT_POLICY {env.get('omp_wait_policy', 'default')} | torch {env['torch']} | "
                     f"{env['device']} | load {env['loadavg']}")
    lines += ["", "| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |")
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    if isinstance(v, (list, tuple)):  # a shape (6, 2000) -> 6x2000; names (image, text) -> image+text
        return ("x" if all(isinstance(x, int) for x in v) else "+").join(str(x) for x in v)
    return str(v)


def write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
