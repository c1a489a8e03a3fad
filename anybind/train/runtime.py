"""The process a training run lives in: device, precision, threads and seeds, the process group, the run directory
(created by rank 0, locked, cleaned), ``train.log``, stop signals, resume discovery, and teardown.

:func:`training_session` sets all of it up around a run and undoes it after, on success or failure::

    with training_session(cfg) as session:      # session.device, session.run_dir, session.rank
        ...build and train...

With torchrun, rank 0 owns the run directory: it alone creates it (other ranks are started with
``hydra.output_subdir=null hydra.run.dir=.`` so Hydra makes nothing for them) and broadcasts its path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from ..errors import AnybindError
from ..io import WriterLock, clean_temp_files
from .. import dist

log = logging.getLogger("anybind.train")


# ------------------------------------------------------------------------------------------- device and process
def resolve_device(name: str) -> torch.device:
    """``trainer.device``: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda`` (this rank's ``LOCAL_RANK`` GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``trainer.precision`` -> (autocast dtype or None for fp32, whether a GradScaler is needed)."""
    if name == "auto":
        name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    table = {"fp32": (None, False), "32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}
    if name not in table:
        raise ValueError(f"trainer.precision must be auto, fp32, bf16 or fp16, got {name!r}")
    return table[name]


def default_threads(device: torch.device, data_workers: int) -> int:
    """torch threads per process: this node's cores shared among its processes, minus the data workers on CPU.

    Oversubscribed cores hurt small models badly (threads spin waiting for each other), so on CPU every busy
    DataLoader worker takes one core away from the training threads.
    """
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return cores if device.type == "cuda" else max(1, cores - data_workers)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_process(cfg: DictConfig, device: torch.device) -> None:
    """torch threads (``trainer.num_threads`` or :func:`default_threads`) and ``trainer.deterministic``."""
    t = cfg.trainer
    torch.set_num_threads(t.num_threads or default_threads(device, 0 if cfg.data.preload else cfg.data.num_workers))
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


# ------------------------------------------------------------------------------------------------ run directory
def make_run_dir(cfg: DictConfig, run_dir: str | Path | None) -> Path:
    """The run directory: ``run_dir``, else ``out_dir``, else Hydra's (or ``runs/<name>/<time>`` outside Hydra).
    Rank 0 creates it and broadcasts its path (a collective)."""
    if dist.is_main():
        if run_dir is None and cfg.out_dir:
            run_dir = cfg.out_dir
        if run_dir is None:
            try:
                from hydra.core.hydra_config import HydraConfig

                run_dir = HydraConfig.get().runtime.output_dir
            except ValueError:  # not inside a Hydra app
                run_dir = Path("runs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
    return Path(dist.broadcast_object(str(run_dir) if run_dir is not None else None))


_EARLY_LOCKS: dict[Path, WriterLock] = {}


def lock_named_run_dir(argv: Sequence[str]) -> None:
    """An explicit ``hydra.run.dir=DIR`` is locked before Hydra writes its ``.hydra/`` files there, so a second
    anybind-train into a directory that a running one holds changes nothing in it."""
    dirs = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not dirs or "${" in dirs[-1] or any(a in ("-m", "--multirun") for a in argv) or dist.env_rank() > 0:
        return
    run_dir = Path(dirs[-1]).expanduser().resolve()
    try:
        _EARLY_LOCKS[run_dir] = WriterLock(run_dir, "training run directory").acquire()
    except AnybindError as exc:
        print(f"anybind-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@contextlib.contextmanager
def owned_run_dir(run_dir: Path, rank: int) -> Iterator[None]:
    """One training run per run directory: rank 0 holds its lock (an OS lock that dies with the process), so a
    second anybind-train into the same directory fails at once, naming the holder's PID. What a killed run left
    half-written (config.yaml, metrics.json temp files) is removed."""
    early = _EARLY_LOCKS.get(run_dir.resolve()) if rank == 0 else None  # taken by lock_named_run_dir()
    lock = WriterLock(run_dir, "training run directory").acquire() if rank == 0 and early is None else None
    try:
        if rank == 0:
            clean_temp_files(run_dir)
        yield
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def run_log(run_dir: Path, rank: int) -> Iterator[None]:
    """Rank 0 keeps ``train.log`` in the run directory outside Hydra (which configures its own job log); the other
    ranks log warnings only."""
    handler = _attach_log_file(run_dir) if rank == 0 else None
    if rank != 0:
        logging.getLogger("anybind").setLevel(logging.WARNING)
    try:
        yield
    finally:
        if handler is not None:
            logging.getLogger("anybind").removeHandler(handler)
            handler.close()


def _attach_log_file(run_dir: Path) -> logging.Handler | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.get()
        return None
    except ValueError:
        pass
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    lg = logging.getLogger("anybind")
    lg.addHandler(handler)
    if lg.level == logging.NOTSET or lg.level > logging.INFO:
        lg.setLevel(logging.INFO)
    return handler


# ------------------------------------------------------------------------------------------------------ session
@dataclass
class Session:
    """Where a run trains: this rank's device, the run directory, the rank."""

    device: torch.device
    run_dir: Path
    rank: int


@contextlib.contextmanager
def training_session(cfg: DictConfig, run_dir: str | Path | None = None) -> Iterator[Session]:
    """Device, process group (under torchrun), threads, the run directory (locked) and its log, for one run; the
    log handler, the lock and the process group are released on exit."""
    device = resolve_device(cfg.trainer.device)
    started = dist.init_distributed(device.type) and dist.world_size() > 1
    try:
        configure_process(cfg, device)
        path = make_run_dir(cfg, run_dir)
        rank = dist.rank()
        with owned_run_dir(path, rank), run_log(path, rank):
            yield Session(device, path, rank)
    finally:
        if started:
            dist.cleanup()


# ------------------------------------------------------------------------------------------ resume and signals
def find_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint directory ``resume=`` names (``latest``: this run directory's newest, or none yet); rank 0
    looks and broadcasts it (a collective when ``resume`` is set)."""
    if not resume:
        return None
    from .checkpointing import find_resume_checkpoint

    found = dist.broadcast_object(find_resume_checkpoint(resume, run_dir) if dist.rank() == 0 else None)
    if found is not None:
        log.info("resume=%s: continuing from %s", resume, found)
    else:  # only "latest" may find nothing; it never looks at other runs
        log.info("resume=latest: %s has no checkpoint yet; starting from step 0 (resume=latest only "
                 "continues this run directory; give resume=<run or step directory> to continue another)",
                 run_dir / "checkpoints")
    return found


def resume_command(run_dir: Path, argv: Sequence[str] | None = None) -> str:
    """This run's command line with ``resume=<run_dir>`` (replacing any ``resume=`` it had)."""
    import shlex

    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.lstrip("+~").startswith("resume=")]
    return " ".join(["anybind-train", *(shlex.quote(a) for a in args), shlex.quote(f"resume={run_dir}")])


class StopSignals:
    """SIGTERM and Ctrl-C become a request to write a checkpoint at the next step boundary and stop.

    Schedulers (SLURM, Kubernetes) send SIGTERM some time before they kill a job; a second Ctrl-C stops at once.
    Handlers are installed only in the main thread and restored on exit. :meth:`requested` agrees across ranks.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum
        log.warning("%s: writing a checkpoint after this step, then stopping%s", signal.Signals(signum).name,
                    " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, device: torch.device) -> int | None:
        """The signal to stop for (on any rank), or ``None``."""
        if dist.world_size() > 1:  # every rank must stop at the same step
            t = torch.tensor([float(self.signum or 0)], device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            return int(t.item()) or None
        return self.signum

    @staticmethod
    def status(signum: int) -> int:
        """The exit status of a process stopped by ``signum`` (128 + the signal number)."""
        return 128 + int(signum)
