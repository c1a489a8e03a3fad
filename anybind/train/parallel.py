"""Data parallelism of a training run (``trainer.strategy``), in one place: DDP replicas or FSDP-sharded towers.

* ``ddp`` (the default): every rank holds the whole :class:`~anybind.train.trainer.TrainModule`, wrapped in
  ``DistributedDataParallel``; gradient accumulation syncs on the last micro-batch only.
* ``fsdp``: :func:`shard_towers` shards every tower's parameters, gradients and optimizer state (``fully_shard``)
  before the optimizer is built; the loss's few temperature parameters stay replicated and :class:`Parallel`
  averages their gradients itself. Checkpoints gather the full weights and optimizer state on every rank.

One process (no torchrun) runs the module as it is, whatever the strategy.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterable

import torch
from torch import nn

from .. import dist

STRATEGIES = ("ddp", "fsdp")


class Parallel:
    """Every step of the trainer that depends on ``trainer.strategy``: wrapping, gradient sync, clipping and the
    full state dicts a checkpoint saves and loads."""

    def __init__(self, strategy: str = "ddp"):
        if strategy not in STRATEGIES:
            raise ValueError(f"trainer.strategy must be 'ddp' or 'fsdp', got {strategy!r}")
        self.strategy = strategy

    @property
    def sharded(self) -> bool:
        """FSDP over more than one rank: the towers' parameters are DTensor shards."""
        return self.strategy == "fsdp" and dist.world_size() > 1

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module the forward runs through: DDP over several ranks, else ``module`` itself (FSDP towers are
        sharded in place by :func:`shard_towers`)."""
        if dist.world_size() == 1 or self.strategy == "fsdp":
            return module
        ids = [device.index] if device.type == "cuda" else None
        # towers outside this step's pair, and rank-local absent modalities, get no gradient: find them each step
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    @staticmethod
    def no_sync(wrapped: nn.Module, sync: bool) -> ContextManager:
        """Skip DDP's gradient all-reduce for a micro-batch that is not the last of its step (``sync=False``)."""
        if not sync and isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return wrapped.no_sync()
        return contextlib.nullcontext()

    def sync_loss_grads(self, loss: nn.Module) -> None:
        """FSDP: average the gradients of the loss's own (replicated, unsharded) parameters over the ranks."""
        if self.sharded:
            for p in loss.parameters():
                if p.grad is not None:
                    dist.all_reduce_sum(p.grad).div_(dist.world_size())

    def clip(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm of ``params``; returns the norm before clipping."""
        if self.strategy == "fsdp":
            return clip_grad_norm(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def model_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The module's full state dict (FSDP: gathered from the shards to the CPU; a collective)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return module.state_dict()

    def optim_state(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's full state dict (FSDP: gathered from the shards; a collective)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(module, optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return optimizer.state_dict()

    def load_state(self, module: nn.Module, optimizer: torch.optim.Optimizer, full: dict[str, torch.Tensor],
                   optim_state: dict) -> None:
        """Load full (unsharded) module and optimizer states, as :meth:`model_state` and :meth:`optim_state` give."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(module, full, options=opts)
            set_optimizer_state_dict(module, optimizer, optim_state, options=opts)
        else:
            module.load_state_dict(full, strict=True)
            optimizer.load_state_dict(optim_state)

    def model_to_save(self, model: nn.Module, full: dict[str, torch.Tensor]) -> nn.Module:
        """The model a checkpoint writes: ``model`` itself, or (FSDP) a plain copy holding the gathered weights."""
        if not self.sharded:
            return model
        return plain_copy(model, {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")})


def shard_towers(module: nn.Module) -> None:
    """FSDP (torchrun, ``trainer.strategy=fsdp``): shard every tower's parameters, gradients and optimizer state.

    Call before building the optimizer. The loss's few temperature parameters stay replicated; the trainer
    averages their gradients itself (:meth:`Parallel.sync_loss_grads`).
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


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """DDP without its hooks: average every trainable parameter's gradient over the ranks (absent grads: 0)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce_sum(p.grad).div_(dist.world_size())


def plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """An unsharded copy of ``model`` (same towers and input contracts) holding the weights ``state``."""
    from ..model import create_model

    spec = model.encoder_spec()
    copy = create_model({m: {"name": s["name"], **s["kwargs"]} for m, s in spec.items()})
    copy.load_state_dict(state)
    for m, s in spec.items():
        copy.encoders[m].input_contract = dict(s["input_contract"])
    return copy
