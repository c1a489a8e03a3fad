"""What a training run reports besides checkpoints: console lines and a progress bar, ``metrics.csv``,
TensorBoard scalars, and after each evaluation ``metrics.json``, ``eval_history.jsonl`` and the R@1 heatmap.

Only rank 0 writes; :class:`TrainLogs` is a no-op on the other ranks. The values come from the trainer, already
averaged over the ranks.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..evaluate import plot_retrieval_heatmap, write_metrics
from .. import dist

log = logging.getLogger("anybind.train")


class CSVLog:
    """``metrics.csv`` with a fixed header; on resume rows after the resumed step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, columns
        rows = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)


class TrainLogs:
    """The run directory's logs; :meth:`open` them at the start of ``fit`` and :meth:`close` them at its end."""

    def __init__(self, run_dir: str | Path, *, max_steps: int, progress: bool = True, tensorboard: bool = True,
                 csv_log: bool = True, heatmap: bool = True):
        self.run_dir, self.max_steps = Path(run_dir), max_steps
        self.progress, self.tensorboard, self.csv_log, self.heatmap = progress, tensorboard, csv_log, heatmap
        self._csv: CSVLog | None = None
        self._tb = None
        self._pbar = None

    def open(self, pairs: list[str], step: int, resumed: bool) -> None:
        """Start (or, resumed at ``step``, continue) metrics.csv, TensorBoard and the progress bar."""
        self._csv = self._tb = self._pbar = None
        if not dist.is_main():
            return
        if self.csv_log:
            cols = (["step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "data_errors"]
                    + [f"loss/{p}" for p in pairs] + [f"temperature/{p}" for p in pairs])
            self._csv = CSVLog(self.run_dir / "metrics.csv", cols, step if resumed else None)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1 if resumed else None)
        if self.progress:
            from tqdm.auto import tqdm

            self._pbar = tqdm(total=self.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                              disable=None)  # a bar on terminals; log files get the log lines only

    def step_done(self) -> None:
        """One optimizer step more on the progress bar."""
        if self._pbar is not None:
            self._pbar.update(1)

    def train(self, row: dict[str, float]) -> None:
        """A training log row (``step``, ``loss``, ``lr``, ``samples_per_s``, ``data_errors``, per-pair losses and
        temperatures): to metrics.csv, TensorBoard, the progress bar and the console."""
        if not dist.is_main():
            return
        step = row["step"]
        if self._csv is not None:
            self._csv.write(row)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self._tb.add_scalar(f"train/{k}", v, step)
        if self._pbar is not None:
            self._pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
        log.info("step %d/%d loss %.4f lr %.2e %.1f samples/s%s", step, self.max_steps, row["loss"], row["lr"],
                 row["samples_per_s"], f" ({row['data_errors']} bad samples skipped)" if row["data_errors"] else "")

    def evaluation(self, metrics: dict[str, Any]) -> None:
        """An evaluation's metrics (with ``step``): metrics.json, a line of eval_history.jsonl, the heatmap, the
        console and TensorBoard."""
        if not dist.is_main():
            return
        write_metrics(self.run_dir, metrics)
        with (self.run_dir / "eval_history.jsonl").open("a") as f:
            f.write(json.dumps({k: metrics[k] for k in ("step", "retrieval", "zero_shot") if k in metrics},
                               default=_json_default) + "\n")
        if self.heatmap and metrics.get("retrieval"):
            plot_retrieval_heatmap(metrics, self.run_dir / "retrieval_R@1.png")
        step = metrics["step"]
        ret = metrics.get("retrieval", {})
        if ret:
            mean_r1 = sum(v["R@1"] for v in ret.values() if not math.isnan(v["R@1"])) / max(1, len(ret))
            log.info("step %d eval: mean R@1 %.3f over %d pairs; %s", step, mean_r1, len(ret),
                     ", ".join(f"{k} {v['R@1']:.2f}" for k, v in list(ret.items())[:6]))
        if self._tb is not None:
            for k, v in ret.items():
                self._tb.add_scalar(f"eval/{k}/R@1", v["R@1"], step)
            for k, v in metrics.get("zero_shot", {}).items():
                self._tb.add_scalar(f"zero_shot/{k}/top1", v["top1"], step)

    def final(self, metrics: dict[str, Any]) -> None:
        """metrics.json of a run that did not evaluate (``eval.enabled=false``)."""
        if dist.is_main():
            write_metrics(self.run_dir, metrics)

    def close(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
        if self._tb is not None:
            self._tb.close()


def _json_default(x: Any) -> Any:
    return float(x) if isinstance(x, torch.Tensor) else str(x)
