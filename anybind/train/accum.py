"""Cached-negative gradient accumulation (``trainer.accum_steps=K``; GradCache, Gao et al. 2021; open_clip's
``accum_freq``).

Plain accumulation (``trainer.grad_accum``) sums the losses of K small batches: each row is contrasted only with
the rows of its own micro-batch, so the task stays as easy as one small batch. A contrastive loss gets better with
more negatives, and memory is what limits the batch. Cached negatives give the loss **and the gradients** of one
batch K times larger, with the activation memory of one micro-batch:

1. embed each of the K micro-batches without autograd and keep the embeddings (``(B, D)`` per modality: tiny);
2. compute the loss on all K x B cached embeddings at once (every row against every other: the big batch's
   negatives), backpropagate it to the embeddings only, and keep ``dL/dz`` (the loss's temperatures get their
   gradients here);
3. run each micro-batch again with autograd and backpropagate ``dL/dz`` of its rows (``z . dL/dz`` as the
   surrogate), so the towers' gradients add up to exactly those of the big batch.

The cost is one extra forward without autograd per micro-batch (about 1.3x the step time of the big batch,
when it fits). Dropout and drop-path draw the same masks in both forwards: the RNG state is saved before each
micro-batch's first forward and restored for its second. Frozen towers are not run again. Under DDP the towers'
gradients are averaged across ranks here (the loss already scored local rows against every rank's embeddings).
"""

from __future__ import annotations

from typing import Iterator

import torch

from .. import dist
from .parallel import average_gradients


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_loss_backward(module, micro_batches, *, amp=None, scaler=None):
    """Steps 1-3 of the module docstring over ``micro_batches`` (``[(inputs, valid), ...]`` on the device).

    Leaves the gradients in the parameters' ``.grad`` (added to what is there) and returns the big batch's
    :class:`~anybind.losses.LossOutput` (detached).
    """
    import contextlib

    amp = amp or contextlib.nullcontext
    device = next(iter(micro_batches[0][1].values())).device
    cached, states = [], []
    for inputs, valid in micro_batches:  # 1. embeddings without autograd
        states.append(_rng_state(device))
        with torch.no_grad(), amp():
            cached.append(module.embed_rows(inputs, valid))
    after = _rng_state(device)
    sizes = [len(next(iter(v.values()))) for _, v in micro_batches]
    mods = list(dict.fromkeys(m for _, v in micro_batches for m in v))
    valid_all, feats_all = {}, {}
    for m in mods:
        parts_v, parts_z = [], []
        for (inputs, valid), z, n in zip(micro_batches, cached, sizes):
            parts_v.append(valid[m] if m in valid else torch.zeros(n, dtype=torch.bool, device=device))
            parts_z.append(z[m] if m in z else torch.zeros(n, module.model.embed_dim, device=device))
        valid_all[m] = torch.cat(parts_v)
        feats_all[m] = torch.cat(parts_z).detach().requires_grad_(m not in module.frozen)
    with amp():  # 2. the big batch's loss, backpropagated to the cached embeddings (and the temperatures)
        out = module.loss(feats_all, valid_all)
    if out.loss.requires_grad:
        (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
    grads = {m: f.grad for m, f in feats_all.items() if f.grad is not None}
    lo = 0
    for (inputs, valid), state, n in zip(micro_batches, states, sizes):  # 3. the towers, one micro-batch at a time
        mine = [m for m in grads if m in valid and m in inputs]
        if mine:
            _set_rng_state(state, device)
            with amp():
                z = module.embed_rows(inputs, valid, modalities=mine)
            surrogate = sum((z[m].float() * grads[m][lo:lo + n].float()).sum() for m in mine if z[m].requires_grad)
            if isinstance(surrogate, torch.Tensor):
                surrogate.backward()
        lo += n
    _set_rng_state(after, device)
    out.loss = out.loss.detach()
    return out


def cached_forward_backward(trainer, batches: Iterator[dict]) -> tuple[dict, int]:
    """The trainer's hook: take ``accum_steps`` loader batches, leave the big batch's gradients in the parameters,
    return ``(sums, rows)`` (logged losses, samples taken) as the trainer's own loop would."""
    if trainer.grad_accum > 1:
        raise ValueError("trainer.grad_accum and trainer.accum_steps cannot both be > 1: accum_steps already "
                         "accumulates (with the big batch's negatives)")
    if trainer.parallel.sharded:
        raise ValueError("trainer.accum_steps > 1 is not supported with trainer.strategy=fsdp; use ddp")
    micro, rows = [], 0
    for _ in range(trainer.accum_steps):
        inputs, valid, n = trainer.next_batch(batches)
        micro.append((inputs, valid))
        rows += n
    out = cached_loss_backward(trainer.module, micro, amp=trainer.autocast, scaler=trainer.scaler)
    if dist.world_size() > 1:
        average_gradients(trainer.params)
    sums = {"loss": out.loss}
    sums.update({f"loss/{name}": v.detach() for name, v in out.pairs.items()})
    return sums, rows
