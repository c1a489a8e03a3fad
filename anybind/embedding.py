"""The one embedding loop: batches of transformed inputs -> a tower -> float32 unit vectors on the CPU.

Every path that embeds runs its towers through :func:`encode_batches`: ``model.embed`` and the benchmarks
(:func:`embed_items`), manifest evaluation (:func:`anybind.eval.embedding.embed_manifest`), ``anybind-embed``
(:mod:`anybind.retrieval.shards`) and the search service. It reads through DataLoader workers (:func:`make_loader`),
runs the tower under ``torch.inference_mode`` and, when asked, bfloat16 or float16 autocast
(:func:`autocast_context`; :func:`resolve_precision` picks it for the hardware), and L2-normalizes in float32.
:func:`auto_workers` sizes the workers to the machine and :class:`ThreadChooser` the tower's intra-op threads, by
measuring. Without autocast (the default) the vectors are exactly those of a float32 forward.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.dataset import ItemDataset, worker_init

# precision names -> the autocast dtype a tower runs under (None: no autocast, float32)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = (*AUTOCAST_DTYPES, "auto")

Autocast = bool | str | torch.dtype | None


def autocast_dtype(autocast: Autocast) -> torch.dtype | None:
    """The autocast dtype ``autocast`` asks for: ``False``, ``None`` or ``"fp32"`` none (float32); ``True`` or
    ``"bf16"`` bfloat16; ``"fp16"`` float16; a ``torch.dtype`` itself."""
    if autocast is None or autocast is False:
        return None
    if autocast is True:
        return torch.bfloat16
    if isinstance(autocast, torch.dtype):
        return None if autocast == torch.float32 else autocast
    name = str(autocast).lower()
    if name not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_DTYPES)} (or True/False), got {autocast!r}")
    return AUTOCAST_DTYPES[name]


def autocast_context(device: torch.device | str, autocast: Autocast):
    """``torch.autocast`` on ``device``'s type at :func:`autocast_dtype`, or a no-op context for float32."""
    dtype = autocast_dtype(autocast)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU with bf16, or a CPU with AMX tiles
    (Intel Sapphire Rapids and later), where a bf16 matrix product runs several times faster than a float32 one."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.cpu, "_is_amx_tile_supported", None)
        try:
            return bool(check()) if check is not None else False
        except Exception:  # noqa: BLE001 - an unknown CPU: no
            return False
    return False


def resolve_precision(precision: str | None, device) -> str:
    """``fp32``, ``bf16`` or ``fp16``; ``auto`` is bf16 where :func:`fast_bf16`, else fp32."""
    p = (precision or "fp32").lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if p == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return p


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(device: torch.device | str, cores: int | None = None) -> int:
    """DataLoader workers for embedding on this machine.

    On a CPU the tower and the decoding share the cores: below 4 cores the main process decodes between batches
    (a worker takes a core from the tower's threads: on 2 quiet cores 0 workers beat 1 by 25-75% for JPEGs, audio
    towers and captions, measured in docs/benchmarks.md; only on a machine busy with other work did 1 worker win);
    from 4 cores a quarter of the cores decode (at most 8). With a GPU the tower is not on the CPU: every core but
    one decodes (at most 16).
    """
    cores = cores or available_cores()
    if torch.device(device).type != "cpu":
        return max(0, min(16, cores - 1))
    return 0 if cores < 4 else min(8, cores // 4)



def resolve_workers(num_workers: int | str | None, device) -> int:
    """``num_workers`` as a count: an int as is, ``"auto"`` (or ``None``) :func:`auto_workers` for ``device``."""
    if num_workers is None or (isinstance(num_workers, str) and num_workers.lower() == "auto"):
        return auto_workers(device)
    n = int(num_workers)
    if n < 0:
        raise ValueError(f"num_workers must be >= 0 or auto, got {num_workers}")
    return n


def make_loader(dataset: Dataset, *, collate_fn, batch_size: int | None = None, batch_sampler=None,
                num_workers: int = 0, device: torch.device | None = None) -> DataLoader:
    """The DataLoader every embedding path uses: one intra-op thread per worker, workers deaf to Ctrl-C and
    SIGTERM (:func:`~anybind.data.dataset.worker_init`), pinned memory for CUDA."""
    kw = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return DataLoader(dataset, collate_fn=collate_fn, num_workers=num_workers,
                      worker_init_fn=worker_init if num_workers else None,
                      pin_memory=device is not None and device.type == "cuda", **kw)


class ThreadChooser:
    """The tower's intra-op threads, chosen by measuring: ``1`` or ``most`` threads, whichever embeds faster now.

    A tiny tower's many small operations gain little from a second thread, and on a machine whose cores are busy
    with other work a multi-threaded region waits for whichever thread the scheduler left off its core (a 5-token
    audio tower on 2 busy cores: 4,200 items/s on one thread, 150 on two; docs/benchmarks.md). So each setting
    runs ``trials`` batches first (alternating, after one warm-up batch), then the faster one runs, and after
    ``probe_every`` batches the other runs once more, because the load on the machine changes; each probe that
    loses doubles the wait before the next (at most ``16 * probe_every``), so a setting that stalls costs little. The speed of a
    setting is the median seconds per unit of work of its last three batches (:func:`batch_work`: batches of texts
    ordered by length differ in size). Threads only split the work; the vectors
    are those of a float32 forward either way.
    """

    def __init__(self, most: int, *, trials: int = 2, probe_every: int = 32):
        self.candidates = tuple(dict.fromkeys((max(1, int(most)), 1)))
        self.trials, self.probe_every = trials, probe_every
        self.seen: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.batches = 0
        self.wait, self.next_probe = probe_every, None  # batches before the next probe; its batch number

    def speed(self, threads: int) -> float:
        """Median seconds per unit of work of the last three batches on ``threads`` (inf before any)."""
        last = sorted(self.seen[threads][-3:])
        return last[len(last) // 2] if last else float("inf")

    @property
    def best(self) -> int:
        return min(self.candidates, key=self.speed)

    def next(self) -> int:
        """The thread count for the next batch."""
        k = self.batches - 1  # batch 0 warms the tower up on the first setting and is not counted
        if k < 0:
            return self.candidates[0]
        if k < self.trials * len(self.candidates):
            return self.candidates[k % len(self.candidates)]
        if self.next_probe is None:
            self.next_probe = self.batches + self.wait
        if len(self.candidates) > 1 and self.batches == self.next_probe:
            return next(c for c in self.candidates if c != self.best)
        return self.best

    def record(self, threads: int, seconds: float, work: float) -> None:
        if self.batches > 0 and work > 0:
            self.seen[threads].append(seconds / work)
        if self.batches == self.next_probe:  # a probe: it won (the wait starts over) or lost (the wait doubles)
            self.wait = self.probe_every if self.best == threads else min(16 * self.probe_every, 2 * self.wait)
            self.next_probe = self.batches + self.wait
        self.batches += 1


def batch_work(x: torch.Tensor) -> int:
    """How much a tower has to do for batch ``x``: its elements, or for integer token ids (padded with 0) the
    tokens that are not padding."""
    return int(torch.count_nonzero(x)) if not (x.is_floating_point() or x.is_complex()) else x.numel()


def encode_batches(encoder: nn.Module, batches: Iterable[tuple[Any, torch.Tensor | None]], *,
                   device: torch.device, autocast: Autocast = False,
                   timing: dict[str, float] | None = None,
                   threads: ThreadChooser | None = None) -> Iterator[tuple[Any, torch.Tensor | None]]:
    """The one embedding loop: ``(tag, inputs)`` -> ``(tag, (n, D) float32 unit vectors on the CPU)``.

    ``tag`` is passed through (row indices, ids, error lists); ``inputs`` of ``None`` (a batch whose every item
    failed) yields ``None``. ``autocast`` (see :func:`autocast_dtype`) runs the tower under autocast on ``device``'s
    type; the vectors are normalized in float32. ``timing["tower"]`` (when given) adds up the seconds spent in the
    tower. ``threads`` (a :class:`ThreadChooser`; CPU towers) sets the intra-op threads of every batch. The caller
    puts the tower in eval mode.
    """
    for tag, x in batches:
        if x is None:
            yield tag, None
            continue
        n = threads.next() if threads is not None else None
        if n is not None:
            torch.set_num_threads(n)
        t = time.perf_counter()
        with torch.inference_mode():
            with autocast_context(device, autocast):
                z = encoder(x.to(device, non_blocking=True))
            z = torch.nn.functional.normalize(z.float(), dim=-1).cpu()
        seconds = time.perf_counter() - t
        if threads is not None:
            threads.record(n, seconds, batch_work(x))
        if timing is not None:
            timing["tower"] = timing.get("tower", 0.0) + seconds
        yield tag, z


@dataclass
class EmbeddedItems:
    """:func:`embed_items`' result: ``embeddings`` ``(N, D)`` in input order (zero rows where ``ok`` is False)
    and ``errors`` ``[(index, message)]`` for the items that could not be read or transformed."""

    embeddings: torch.Tensor
    ok: torch.Tensor
    errors: list[tuple[int, str]] = field(default_factory=list)


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool):
    """``iterable`` with a tqdm bar of ``total`` batches when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def embed_items(model, modality: str, items: Sequence[Any], *, batch_size: int = 32, num_workers: int = 0,
                progress: bool | None = None, autocast: Autocast = False, skip_errors: bool = False) -> EmbeddedItems:
    """Embed one modality's items (paths, strings, arrays or tensors) through DataLoader workers.

    ``skip_errors=False`` raises the first :class:`~anybind.errors.InputError`; ``True`` leaves bad items out
    (``ok`` False) and lists them in ``errors``, so an evaluation can report every file it could not use.
    ``progress`` shows a bar (default: when there are more than 8 batches).
    """
    encoder, device = model.encoders[modality], model.device
    ds = ItemDataset(modality, items, encoder.input_contract, skip_errors=skip_errors)
    loader = make_loader(ds, collate_fn=ds.collate, batch_size=batch_size, num_workers=num_workers, device=device)
    show = progress if progress is not None else len(loader) > 8
    result = torch.zeros(len(ds), model.embed_dim)
    ok = torch.zeros(len(ds), dtype=torch.bool)
    errors: list[tuple[int, str]] = []
    was_training = encoder.training
    encoder.eval()
    try:
        batches = (((idx, errs), batch) for idx, batch, errs in progress_bar(loader, len(loader), f"embed {modality}",
                                                                            show))
        for (idx, errs), z in encode_batches(encoder, batches, device=device, autocast=autocast):
            errors.extend(errs)
            if z is not None:
                result[idx] = z
                ok[idx] = True
    finally:
        encoder.train(was_training)
    return EmbeddedItems(result, ok, errors)
