"""The training loop: masked multi-pair contrastive steps, periodic evaluation, checkpoints, exact resume.

:class:`Trainer` runs optimizer steps over a :class:`~anybind.train.module.TrainModule` (the towers plus the
loss); everything it needs is passed in by the recipe as plain objects and values. What depends on the strategy
(DDP, FSDP) is :class:`~anybind.train.parallel.Parallel`'s; the logs and metrics files are
:class:`~anybind.train.logs.TrainLogs`'.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch

from ..errors import CheckpointError, Interrupted
from .. import dist
from .checkpointing import CheckpointManager, capture_rng, load_state, restore_rng
from .data_errors import SkippedSamples
from .logs import TrainLogs
from .module import TrainModule
from .parallel import Parallel
from .runtime import StopSignals

log = logging.getLogger("anybind.train")

Batch = dict[str, Any]  # a collated loader batch: {"ids", "inputs", "valid", "errors"} (anybind.data.dataset)


class Trainer:
    """Optimizer steps over a :class:`TrainModule`, with logging, evaluation, checkpoints and exact resume.

    :meth:`fit` is the whole run. :meth:`train_step` is one optimizer step on its own (the benchmarks call it):
    ``grad_accum`` micro-batches (or ``accum_steps`` with cached negatives) from an iterator of loader batches,
    e.g. :meth:`batches`. Set :attr:`phase_times` to ``{}`` to have the seconds of each step phase (``data``,
    ``forward``, ``backward``, ``optimizer``) added up in it; ``None`` (the default) times nothing and never
    synchronizes the device.
    """

    def __init__(
        self,
        *,
        module: TrainModule,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loader: Iterable[Batch] | None,
        sampler: Any,
        device: torch.device,
        run_dir: str | Path,
        max_steps: int,
        grad_accum: int = 1,
        accum_steps: int = 1,
        autocast_dtype: torch.dtype | None = None,
        use_scaler: bool = False,
        clip_grad_norm: float | None = 1.0,
        strategy: str = "ddp",
        log_every: int = 10,
        eval_every: int = 0,
        ckpt_every: int = 500,
        keep_last: int = 2,
        progress: bool = True,
        tensorboard: bool = True,
        csv_log: bool = True,
        heatmap: bool = True,
        evaluate: Callable[[], dict] | None = None,
        eval_on_all_ranks: bool = False,
        checkpoint_meta: dict | None = None,
        config: dict | None = None,
    ):
        """``scheduler`` steps once per optimizer step (``step()``, ``get_last_lr()``, ``state_dict()``);
        ``sampler`` has ``set_epoch(epoch, start_batch)``; ``evaluate`` returns the metrics dict of
        :func:`anybind.evaluate.evaluate_model` (run on rank 0, or on every rank with ``eval_on_all_ranks``);
        ``checkpoint_meta`` and ``config`` go into every checkpoint's sidecar."""
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.loader, self.sampler, self.device = loader, sampler, device
        self.run_dir = Path(run_dir)
        self.max_steps, self.grad_accum = int(max_steps), max(1, int(grad_accum))
        self.accum_steps = max(1, int(accum_steps))  # cached-negative accumulation (anybind/train/accum.py)
        self.autocast_dtype, self.clip = autocast_dtype, clip_grad_norm
        self.scaler = torch.amp.GradScaler(device.type) if use_scaler else None
        self.log_every, self.eval_every, self.ckpt_every = max(1, log_every), eval_every, ckpt_every
        self.evaluate_fn, self.eval_on_all_ranks = evaluate, eval_on_all_ranks
        self.checkpoint_meta, self.config = dict(checkpoint_meta or {}), dict(config or {})
        self.ckpt = CheckpointManager(self.run_dir, keep_last)
        self.logs = TrainLogs(self.run_dir, max_steps=self.max_steps, progress=progress, tensorboard=tensorboard,
                              csv_log=csv_log, heatmap=heatmap)
        self.parallel = Parallel(strategy)
        self.wrapped = self.parallel.wrap(module, device)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.step = self.epoch = self.batch_in_epoch = 0
        self.samples_seen = 0
        self.data_errors = SkippedSamples()
        self.last_log: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self.phase_times: dict[str, float] | None = None

    # ------------------------------------------------------------------------------------------------ batches
    def batches(self) -> Iterator[Batch]:
        """The loader's batches, epoch after epoch without end (the sampler resumes mid-epoch after a resume)."""
        while True:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def next_batch(self, batches: Iterator[Batch]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        """The next batch's ``(inputs, valid, rows)`` on the device; its skipped samples are counted."""
        batch = next(batches)
        self.data_errors.note(batch["errors"])
        inputs = {m: x.to(self.device, non_blocking=True) for m, x in batch["inputs"].items()}
        valid = {m: v.to(self.device, non_blocking=True) for m, v in batch["valid"].items()}
        return inputs, valid, len(batch["ids"])

    def _global_errors(self) -> int:
        """Skipped samples over all ranks (a collective: every rank calls it)."""
        return self.data_errors.global_count(self.device)

    # ------------------------------------------------------------------------------------------------- a step
    def autocast(self) -> ContextManager:
        """The forward's autocast context (``autocast_dtype``; none for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def lap(self, phase: str | None, since: float | None) -> float | None:
        """With :attr:`phase_times` set: add the seconds since ``since`` to ``phase``; returns the new mark."""
        if self.phase_times is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if phase is not None and since is not None:
            self.phase_times[phase] = self.phase_times.get(phase, 0.0) + now - since
        return now

    def train_step(self, batches: Iterator[Batch]) -> dict[str, torch.Tensor]:
        """One optimizer step over the next batches of ``batches``; returns the step's losses (``loss``,
        ``loss/<pair>``, and ``grad_norm`` when clipping), as tensors on the device."""
        from .accum import cached_forward_backward

        sums, rows = cached_forward_backward(self, batches) if self.accum_steps > 1 else ({}, 0)
        mark = self.lap(None, None)
        for micro in range(self.grad_accum if self.accum_steps == 1 else 0):  # accum_steps > 1: done just above
            inputs, valid, n = self.next_batch(batches)
            rows += n
            mark = self.lap("data", mark)
            with self.parallel.no_sync(self.wrapped, sync=micro == self.grad_accum - 1):
                with self.autocast():
                    out = self.wrapped(inputs, valid)
                mark = self.lap("forward", mark)
                loss = out.loss / self.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                mark = self.lap("backward", mark)
            sums["loss"] = sums.get("loss", 0.0) + out.loss.detach() / self.grad_accum
            for name, v in out.pairs.items():
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + v / self.grad_accum
        self.parallel.sync_loss_grads(self.module.loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip:
            sums["grad_norm"] = self.parallel.clip(self.params, self.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.module.loss.clamp_()
        self.lap("optimizer", mark)
        self.step += 1
        self.samples_seen += rows * dist.world_size()
        return sums

    def _log_row(self, acc: dict[str, list], seconds: float, samples: int) -> None:
        """The mean of each logged value since the last row, over all ranks (a collective), to the logs."""
        keys = sorted(acc)
        vals = torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32).cpu() for v in acc[k]]).mean()
                            for k in keys])
        if dist.world_size() > 1:
            vals = vals.to(self.device)
            dist.all_reduce_sum(vals)
            vals = vals.cpu() / dist.world_size()
        row = {k: float(v) for k, v in zip(keys, vals)}
        row.update({"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                    "samples_per_s": samples / max(seconds, 1e-9), "data_errors": self._global_errors()})
        row.update({f"temperature/{k}": v for k, v in self.module.loss.temperatures().items()})
        self.last_log = row
        self.logs.train(row)

    # ------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step_<n>`` (weights + training state) and point ``checkpoints/last`` at it (a
        collective: every rank calls it, rank 0 writes)."""
        rngs = [capture_rng()]
        if dist.world_size() > 1:
            rngs = [None] * dist.world_size()
            torch.distributed.all_gather_object(rngs, capture_rng())
        full = self.parallel.model_state(self.module)
        optim = self.parallel.optim_state(self.module, self.optimizer)
        errors = self.data_errors.state(self.device)
        if dist.is_main():
            state = {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples_seen": self.samples_seen, "world_size": dist.world_size(),
                "optimizer": optim, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "loss": {k[len("loss."):]: v for k, v in full.items() if k.startswith("loss.")},
                "rng": rngs, "data_errors": errors,
            }
            model = self.parallel.model_to_save(self.module.model, full)
            path = self.ckpt.save(self.step, model, state, config=self.config,
                                  extra={**self.checkpoint_meta, "step": self.step})
            log.info("step %d: checkpoint %s", self.step, path)
        dist.barrier()

    def load_checkpoint(self, path: Path) -> None:
        """Continue exactly where the checkpoint directory ``path`` stopped: weights, optimizer, schedule, scaler,
        step and data position, skipped-sample counts and every rank's RNG streams."""
        from ..checkpoint import load_tensors

        weights, _ = load_tensors(path / "model")
        state = load_state(path / "state")
        needed = ("step", "epoch", "batch_in_epoch", "optimizer", "scheduler", "rng", "loss")
        lacking = [k for k in needed if k not in state]
        if lacking:
            raise CheckpointError(f"training state {path / 'state.json'} lacks {lacking}; it is damaged or not a "
                                  "training checkpoint")
        full = {f"model.{k}": v for k, v in weights.items()}
        full.update({f"loss.{k}": v for k, v in state["loss"].items()})
        try:
            self.parallel.load_state(self.module, self.optimizer, full, state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = " ".join(str(exc).split())[:600]
            raise CheckpointError(f"cannot resume from {path}: its model or optimizer does not fit this run (was "
                                  f"it trained with other towers or settings?): {detail}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.samples_seen = state.get("samples_seen", 0)
        self.data_errors.load(state.get("data_errors"))
        rngs = state["rng"]
        if state.get("world_size") != dist.world_size():
            log.warning("resuming a %s-process run with %d processes: data order and RNG streams differ from an "
                        "uninterrupted run", state.get("world_size"), dist.world_size())
        restore_rng(rngs[dist.rank()] if dist.rank() < len(rngs) else rngs[0])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    # ------------------------------------------------------------------------------------------- evaluation
    def run_evaluation(self, train_stats: dict | None = None) -> dict:
        """Evaluate now (rank 0, or every rank with ``eval_on_all_ranks``) and write the results (a collective);
        returns the metrics, ``{}`` without an ``evaluate`` function."""
        if self.evaluate_fn is None:
            return {}
        metrics: dict[str, Any] = {}
        errors = self.data_errors.report(self.device)
        if dist.is_main() or self.eval_on_all_ranks:
            t0 = time.perf_counter()
            metrics = self.evaluate_fn()
            self.module.train()  # evaluation switched the towers to eval mode; frozen ones stay there
            if dist.is_main():
                metrics.update({"step": self.step, "epoch": self.epoch, "samples_seen": self.samples_seen,
                                "train": dict(train_stats or self.last_log),
                                "data_errors": errors,
                                "eval_seconds": round(time.perf_counter() - t0, 3)})
                self.logs.evaluation(metrics)
        dist.barrier()
        self.metrics = metrics
        return metrics

    # ---------------------------------------------------------------------------------------------- the run
    def fit(self, resume_from: Path | None = None) -> dict:
        """Train to ``max_steps`` (from the checkpoint ``resume_from``, if given), logging every ``log_every``
        steps, evaluating every ``eval_every`` and at the end, checkpointing every ``ckpt_every`` and at the end.

        Returns the final metrics (also in ``metrics.json``). SIGTERM or Ctrl-C writes a checkpoint at the next
        step boundary and raises :class:`~anybind.errors.Interrupted`.
        """
        if resume_from is not None:
            self.load_checkpoint(Path(resume_from))
        self.logs.open([f"{a}-{b}" for a, b in self.module.loss.pairs], self.step, resumed=resume_from is not None)
        self.module.train()
        batches = self.batches()
        acc: dict[str, list] = {}
        t0, samples0 = time.perf_counter(), self.samples_seen
        stop = StopSignals()
        try:
            stop.__enter__()
            while self.step < self.max_steps:
                for k, v in self.train_step(batches).items():
                    acc.setdefault(k, []).append(v)
                self.logs.step_done()
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    self._log_row(acc, time.perf_counter() - t0, self.samples_seen - samples0)
                    acc, t0, samples0 = {}, time.perf_counter(), self.samples_seen
                if self.eval_every and self.step % self.eval_every == 0 and self.step < self.max_steps:
                    self.run_evaluation()
                if self.ckpt_every and self.step % self.ckpt_every == 0 and self.step < self.max_steps:
                    self.save_checkpoint()
                signum = stop.requested(self.device)
                if signum is not None and self.step < self.max_steps:
                    self.save_checkpoint()  # through the CheckpointManager, as every periodic checkpoint
                    import signal

                    name = signal.Signals(signum).name
                    raise Interrupted(f"{name}: stopped at step {self.step} of {self.max_steps} after writing the "
                                      f"checkpoint {self.ckpt.latest()}", status=StopSignals.status(signum))
            self.save_checkpoint()
            self.run_evaluation()
            errors = self.data_errors.report(self.device)
            if dist.is_main():
                self.data_errors.log_summary(errors)
            if dist.is_main() and not self.metrics:  # evaluation disabled: still leave a metrics.json
                self.metrics = {"retrieval": {}, "zero_shot": {}, "step": self.step, "epoch": self.epoch,
                                "samples_seen": self.samples_seen, "train": self.last_log, "data_errors": errors}
                self.logs.final(self.metrics)
        finally:
            stop.__exit__()
            self.logs.close()
        return self.metrics
