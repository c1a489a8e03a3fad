"""Multi-stage recipes (anchor stage, then bind stage, then evaluation) in one process, with a clock per stage.

Used by ``anybind-demo`` (:mod:`anybind.demo`) and the digits recipe (:mod:`anybind.train.digits`)::

    clock = StageClock()
    with clock("anchor"):
        anchor = run_stage("world_anchor", out / "anchor", ["trainer.max_steps=10"])
    clock.report()   # {"anchor": {"wall_s": .., "cpu_s": .., "load_avg": [..]}, "total": {...}, ...}
"""

from __future__ import annotations

import logging
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

log = logging.getLogger("anybind.train")


def cpu_seconds() -> float:
    """user + sys CPU seconds of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class StageClock:
    """Wall and CPU seconds per named stage, with the load average when each stage ended (a busy machine shows)."""

    def __init__(self, name: str = "recipe") -> None:
        self.name = name
        self.stages: dict[str, dict[str, Any]] = {}
        self._t0, self._c0 = time.perf_counter(), cpu_seconds()
        self._start_load = _load_avg()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            self.stages[stage] = {"wall_s": round(time.perf_counter() - t0, 1),
                                  "cpu_s": round(cpu_seconds() - c0, 1), "load_avg": _load_avg()}
            s = self.stages[stage]
            log.info("%s %s: %.1f s wall, %.1f s CPU (load %s)", self.name, stage, s["wall_s"], s["cpu_s"],
                     s["load_avg"])

    def report(self) -> dict[str, Any]:
        """``{stage: {...}, "total": {...}, "load_avg_start": [..], "cpu_count": n}``."""
        return {"load_avg_start": self._start_load, "cpu_count": os.cpu_count(), **self.stages,
                "total": {"wall_s": round(time.perf_counter() - self._t0, 1),
                          "cpu_s": round(cpu_seconds() - self._c0, 1), "load_avg": _load_avg()}}


def run_stage(experiment: str, out: str | Path, overrides: Sequence[str] = ()):
    """Compose ``experiment=<experiment>`` plus ``overrides`` and train it into ``out``; returns the RunResult."""
    from .recipe import compose_train_config, run

    cfg = compose_train_config([f"experiment={experiment}", f"out_dir={out}", *overrides])
    return run(cfg, out)
