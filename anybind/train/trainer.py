"""The training loop: masked multi-pair contrastive steps, logging, periodic evaluation, checkpoints, exact resume.

:class:`TrainModule` is the unit DDP / FSDP wraps: the model's towers plus the loss (whose temperatures are
trained and synchronized like any weight). :class:`Trainer` runs optimizer steps over it; everything it needs
is passed in by the recipe as plain objects and values.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from ..errors import CheckpointError, Interrupted
from ..evaluate import plot_retrieval_heatmap, write_metrics
from ..losses import ContrastiveLoss, LossOutput
from . import dist
from .checkpointing import CheckpointManager, capture_rng, load_state, restore_rng

log = logging.getLogger("anybind.train")

MAX_ERROR_EXAMPLES = 20


class TrainModule(nn.Module):
    """Towers + loss. ``forward(inputs, valid)`` embeds the present rows of each modality and returns the loss.

    ``inputs[m]`` holds only the rows where ``valid[m]`` is true (see :mod:`anybind.data.dataset`); embeddings are
    scattered back to full ``(B, D)`` so that every rank gathers equal shapes. Frozen towers run without autograd
    and stay in eval mode.
    """

    def __init__(self, model: nn.Module, loss: ContrastiveLoss, frozen: Iterable[str] = (),
                 precomputed: Iterable[str] = ()):
        super().__init__()
        self.model, self.loss = model, loss
        self.frozen = tuple(frozen)
        # frozen modalities whose batches already hold the tower's embeddings (trainer.cache_frozen)
        self.precomputed = tuple(precomputed)
        if set(self.precomputed) - set(self.frozen):
            raise ValueError(f"precomputed embeddings {list(self.precomputed)} must come from frozen towers "
                             f"(frozen: {list(self.frozen)})")
        for m in self.frozen:
            model.encoders[m].requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "TrainModule":
        super().train(mode)
        for m in self.frozen:
            self.model.encoders[m].eval()
        return self

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The ``(n, D)`` embeddings of one modality's rows (rows of a precomputed modality are embeddings)."""
        if modality in self.precomputed:
            return x
        with torch.set_grad_enabled(torch.is_grad_enabled() and modality not in self.frozen):
            return self.model.encoders[modality](x)

    def forward(self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> LossOutput:
        B = len(next(iter(valid.values())))
        feats = {}
        for m, v in valid.items():
            x = inputs.get(m)
            if x is None:  # no row of this rank has it; other ranks may: keep the collective calls aligned
                feats[m] = torch.zeros(B, self.model.embed_dim, device=v.device)
                continue
            z = self.embed(m, x)
            if z.shape[0] != B:
                z = z.new_zeros(B, z.shape[1]).index_copy(0, v.nonzero().squeeze(1), z)
            feats[m] = z
        out = self.loss(feats, valid)
        if not out.loss.requires_grad:  # every row failed: a zero that still reaches backward (DDP needs it)
            anchor = next(p for p in self.parameters() if p.requires_grad)
            out.loss = out.loss + 0.0 * anchor.sum()
        return out


class StopSignals:
    """SIGTERM and Ctrl-C become a request to write a checkpoint at the next step boundary and stop.

    Schedulers (SLURM, Kubernetes) send SIGTERM some time before they kill a job; a second Ctrl-C stops at once.
    Handlers are installed only in the main thread and restored on exit. :meth:`requested` agrees across ranks.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum
        log.warning("%s: writing a checkpoint after this step, then stopping%s", signal.Signals(signum).name,
                    " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

    def __exit__(self, *exc) -> None:
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
        return 128 + int(signum)


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


class Trainer:
    def __init__(
        self,
        *,
        module: TrainModule,
        optimizer: torch.optim.Optimizer,
        scheduler,
        loader,
        sampler,
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
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.loader, self.sampler, self.device = loader, sampler, device
        self.run_dir = Path(run_dir)
        self.max_steps, self.grad_accum = int(max_steps), max(1, int(grad_accum))
        self.accum_steps = max(1, int(accum_steps))  # cached-negative accumulation (anybind/train/accum.py)
        self.autocast_dtype, self.clip = autocast_dtype, clip_grad_norm
        self.scaler = torch.amp.GradScaler(device.type) if use_scaler else None
        self.log_every, self.eval_every, self.ckpt_every = max(1, log_every), eval_every, ckpt_every
        self.progress, self.tensorboard, self.csv_log, self.heatmap = progress, tensorboard, csv_log, heatmap
        self.evaluate_fn, self.eval_on_all_ranks = evaluate, eval_on_all_ranks
        self.checkpoint_meta, self.config = dict(checkpoint_meta or {}), dict(config or {})
        self.ckpt = CheckpointManager(self.run_dir, keep_last)
        self.strategy = strategy
        self.wrapped = self._wrap(module)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.step = self.epoch = self.batch_in_epoch = 0
        self.samples_seen = 0
        self.error_count, self.error_examples = 0, []
        self.last_log: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self._csv: CSVLog | None = None
        self._tb = None
        # Benchmarks set this to {} to get seconds per step phase (data, forward, backward, optimizer) added up in
        # it; None (the default) times nothing and never synchronizes the device.
        self.phase_times: dict[str, float] | None = None

    # ----------------------------------------------------------------------------------------------- set-up
    def _wrap(self, module: nn.Module) -> nn.Module:
        if dist.world_size() == 1 or self.strategy == "fsdp":  # FSDP: towers were sharded by shard_towers()
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # towers outside this step's pair, and rank-local absent modalities, get no gradient: find them each step
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def _batches(self) -> Iterator[dict]:
        while True:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _global_errors(self) -> int:
        """Skipped samples over all ranks (a collective: every rank calls it)."""
        t = torch.tensor([float(self.error_count)], device=self.device)
        return int(dist.all_reduce_sum(t).item())

    # ------------------------------------------------------------------------------------------ checkpoints
    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.strategy == "fsdp" and dist.world_size() > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.module.state_dict()

    def _optim_state(self) -> dict:
        if self.strategy == "fsdp" and dist.world_size() > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.module, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def save_checkpoint(self) -> None:
        rngs = [capture_rng()]
        if dist.world_size() > 1:
            rngs = [None] * dist.world_size()
            torch.distributed.all_gather_object(rngs, capture_rng())
        full = self._model_state()
        optim = self._optim_state()
        errors = self._global_errors()
        if dist.is_main():
            state = {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples_seen": self.samples_seen, "world_size": dist.world_size(),
                "optimizer": optim, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "loss": {k[len("loss."):]: v for k, v in full.items() if k.startswith("loss.")},
                "rng": rngs, "data_errors": {"count": errors, "examples": self.error_examples},
            }
            model = self.module.model
            if self.strategy == "fsdp" and dist.world_size() > 1:  # a plain copy holding the full weights
                model = _plain_copy(model, {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")})
            path = self.ckpt.save(self.step, model, state, config=self.config,
                                  extra={**self.checkpoint_meta, "step": self.step})
            log.info("step %d: checkpoint %s", self.step, path)
        dist.barrier()

    def load_checkpoint(self, path: Path) -> None:
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
            if self.strategy == "fsdp" and dist.world_size() > 1:
                from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                     set_optimizer_state_dict)

                opts = StateDictOptions(full_state_dict=True)
                set_model_state_dict(self.module, full, options=opts)
                set_optimizer_state_dict(self.module, self.optimizer, state["optimizer"], options=opts)
            else:
                self.module.load_state_dict(full, strict=True)
                self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = " ".join(str(exc).split())[:600]
            raise CheckpointError(f"cannot resume from {path}: its model or optimizer does not fit this run (was "
                                  f"it trained with other towers or settings?): {detail}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.samples_seen = state.get("samples_seen", 0)
        errors = state.get("data_errors") or {}  # the global count lives on rank 0 (sums over ranks stay right)
        self.error_count = errors.get("count", 0) if dist.is_main() else 0
        self.error_examples = list(errors.get("examples", [])) if dist.is_main() else []
        rngs = state["rng"]
        if state.get("world_size") != dist.world_size():
            log.warning("resuming a %s-process run with %d processes: data order and RNG streams differ from an "
                        "uninterrupted run", state.get("world_size"), dist.world_size())
        restore_rng(rngs[dist.rank()] if dist.rank() < len(rngs) else rngs[0])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    # ------------------------------------------------------------------------------------------- evaluation
    def run_evaluation(self, train_stats: dict | None = None) -> dict:
        if self.evaluate_fn is None:
            return {}
        metrics: dict[str, Any] = {}
        errors = self._global_errors()
        if dist.is_main() or self.eval_on_all_ranks:
            t0 = time.perf_counter()
            metrics = self.evaluate_fn()
            self.module.train()  # evaluation switched the towers to eval mode; frozen ones stay there
            if dist.is_main():
                metrics.update({"step": self.step, "epoch": self.epoch, "samples_seen": self.samples_seen,
                                "train": dict(train_stats or self.last_log),
                                "data_errors": {"skipped": errors, "examples": self.error_examples},
                                "eval_seconds": round(time.perf_counter() - t0, 3)})
                write_metrics(self.run_dir, metrics)
                with (self.run_dir / "eval_history.jsonl").open("a") as f:
                    f.write(json.dumps({k: metrics[k] for k in ("step", "retrieval", "zero_shot") if k in metrics},
                                       default=_json_default) + "\n")
                if self.heatmap and metrics.get("retrieval"):
                    plot_retrieval_heatmap(metrics, self.run_dir / "retrieval_R@1.png")
                self._log_eval(metrics)
        dist.barrier()
        self.metrics = metrics
        return metrics

    def _log_eval(self, metrics: dict) -> None:
        ret = metrics.get("retrieval", {})
        if ret:
            mean_r1 = sum(v["R@1"] for v in ret.values() if not math.isnan(v["R@1"])) / max(1, len(ret))
            log.info("step %d eval: mean R@1 %.3f over %d pairs; %s", self.step, mean_r1, len(ret),
                     ", ".join(f"{k} {v['R@1']:.2f}" for k, v in list(ret.items())[:6]))
        if self._tb is not None:
            for k, v in ret.items():
                self._tb.add_scalar(f"eval/{k}/R@1", v["R@1"], self.step)
            for k, v in metrics.get("zero_shot", {}).items():
                self._tb.add_scalar(f"zero_shot/{k}/top1", v["top1"], self.step)

    # ---------------------------------------------------------------------------------------------- the loop
    def _record_errors(self, batch: dict) -> None:
        for sid, m, msg in batch["errors"]:
            self.error_count += 1
            if len(self.error_examples) < MAX_ERROR_EXAMPLES:
                self.error_examples.append({"id": sid, "modality": m, "error": msg})
                log.warning("skipped a bad sample (%s, %s): %s", sid, m, msg)

    def _amp(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _lap(self, phase: str | None, since: float | None) -> float | None:
        """With :attr:`phase_times` set: add the seconds since ``since`` to ``phase``; returns the new mark."""
        if self.phase_times is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if phase is not None and since is not None:
            self.phase_times[phase] = self.phase_times.get(phase, 0.0) + now - since
        return now

    def _train_step(self, batches: Iterator[dict]) -> dict[str, torch.Tensor]:
        from .accum import cached_forward_backward

        sums, rows = cached_forward_backward(self, batches) if self.accum_steps > 1 else ({}, 0)
        mark = self._lap(None, None)
        for micro in range(self.grad_accum if self.accum_steps == 1 else 0):  # accum_steps > 1: done just above
            batch = next(batches)
            self._record_errors(batch)
            inputs = {m: x.to(self.device, non_blocking=True) for m, x in batch["inputs"].items()}
            valid = {m: v.to(self.device, non_blocking=True) for m, v in batch["valid"].items()}
            rows += len(batch["ids"])
            mark = self._lap("data", mark)
            sync_later = micro < self.grad_accum - 1 and isinstance(self.wrapped, nn.parallel.DistributedDataParallel)
            with self.wrapped.no_sync() if sync_later else contextlib.nullcontext():
                with self._amp():
                    out = self.wrapped(inputs, valid)
                mark = self._lap("forward", mark)
                loss = out.loss / self.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                mark = self._lap("backward", mark)
            sums["loss"] = sums.get("loss", 0.0) + out.loss.detach() / self.grad_accum
            for name, v in out.pairs.items():
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + v / self.grad_accum
        if self.strategy == "fsdp" and dist.world_size() > 1:  # the loss's own (unsharded) parameters
            for p in self.module.loss.parameters():
                if p.grad is not None:
                    dist.all_reduce_sum(p.grad).div_(dist.world_size())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip:
            sums["grad_norm"] = (clip_grad_norm(self.params, self.clip) if self.strategy == "fsdp"
                                 else torch.nn.utils.clip_grad_norm_(self.params, self.clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.module.loss.clamp_()
        self._lap("optimizer", mark)
        self.step += 1
        self.samples_seen += rows * dist.world_size()
        return sums

    def _log(self, acc: dict[str, list], seconds: float, samples: int, pbar) -> None:
        keys = sorted(acc)
        vals = torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32).cpu() for v in acc[k]]).mean() for k in keys])
        if dist.world_size() > 1:
            vals = vals.to(self.device)
            dist.all_reduce_sum(vals)
            vals = vals.cpu() / dist.world_size()
        row = {k: float(v) for k, v in zip(keys, vals)}
        row.update({"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0],
                    "samples_per_s": samples / max(seconds, 1e-9), "data_errors": self._global_errors()})
        row.update({f"temperature/{k}": v for k, v in self.module.loss.temperatures().items()})
        self.last_log = row
        if not dist.is_main():
            return
        if self._csv is not None:
            self._csv.write(row)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self._tb.add_scalar(f"train/{k}", v, self.step)
        if pbar is not None:
            pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
        log.info("step %d/%d loss %.4f lr %.2e %.1f samples/s%s", self.step, self.max_steps, row["loss"], row["lr"],
                 row["samples_per_s"], f" ({row['data_errors']} bad samples skipped)" if row["data_errors"] else "")

    def _open_logs(self, resumed: bool) -> None:
        self._csv = self._tb = None
        if not dist.is_main():
            return
        if self.csv_log:
            pairs = [f"{a}-{b}" for a, b in self.module.loss.pairs]
            cols = (["step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "data_errors"]
                    + [f"loss/{p}" for p in pairs] + [f"temperature/{p}" for p in pairs])
            self._csv = CSVLog(self.run_dir / "metrics.csv", cols, self.step if resumed else None)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1 if resumed else None)

    def fit(self, resume_from: Path | None = None) -> dict:
        if resume_from is not None:
            self.load_checkpoint(Path(resume_from))
        self._open_logs(resumed=resume_from is not None)
        self.module.train()
        batches = self._batches()
        pbar = None
        if self.progress and dist.is_main():
            from tqdm.auto import tqdm

            pbar = tqdm(total=self.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                        disable=None)  # a bar on terminals; log files get the log lines only
        acc: dict[str, list] = {}
        t0, samples0 = time.perf_counter(), self.samples_seen
        stop = StopSignals()
        try:
            stop.__enter__()
            while self.step < self.max_steps:
                for k, v in self._train_step(batches).items():
                    acc.setdefault(k, []).append(v)
                if pbar is not None:
                    pbar.update(1)
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    self._log(acc, time.perf_counter() - t0, self.samples_seen - samples0, pbar)
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
            errors = self._global_errors()
            if dist.is_main() and not self.metrics:  # evaluation disabled: still leave a metrics.json
                self.metrics = {"retrieval": {}, "zero_shot": {}, "step": self.step, "epoch": self.epoch,
                                "samples_seen": self.samples_seen, "train": self.last_log,
                                "data_errors": {"skipped": errors, "examples": self.error_examples}}
                write_metrics(self.run_dir, self.metrics)
        finally:
            stop.__exit__()
            if pbar is not None:
                pbar.close()
            if self._tb is not None:
                self._tb.close()
        return self.metrics


def shard_towers(module: TrainModule) -> None:
    """FSDP (torchrun, ``trainer.strategy=fsdp``): shard every tower's parameters, gradients and optimizer state.

    Call before building the optimizer. The loss's few temperature parameters stay replicated; the trainer
    averages their gradients itself.
    """
    from torch.distributed.fsdp import fully_shard

    for enc in module.model.encoders.values():
        fully_shard(enc)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of ``params``, which may mix FSDP-sharded (DTensor) and plain tensors."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    sq = torch.zeros((), device=grads[0].device)
    for g in grads:
        n = torch.linalg.vector_norm(g.float())
        if hasattr(n, "full_tensor"):  # a DTensor norm: its value over all shards
            n = n.full_tensor()
        sq = sq + n.square()
    total = sq.sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.device))
    return total


def _plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    from ..model import create_model

    spec = model.encoder_spec()
    copy = create_model({m: {"name": s["name"], **s["kwargs"]} for m, s in spec.items()})
    copy.load_state_dict(state)
    for m, s in spec.items():
        copy.encoders[m].input_contract = dict(s["input_contract"])
    return copy


def _json_default(x):
    return float(x) if isinstance(x, torch.Tensor) else str(x)
