"""AdamW with decay / no-decay parameter groups, and a warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

# Parameter names that never decay: learned tokens and positions (as in timm's ``no_weight_decay``) and the
# loss's temperature / bias.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "cls_pos", "mask_token", "reg_token", "positional_embedding", "class_embedding",
                  "bias_k", "bias_v", "log_scale", "logit_scale", "logit_bias")


def _module_no_decay(root: nn.Module) -> set[str]:
    """Full names of parameters that should not decay: embeddings, norms, and anything a module declares."""
    names: set[str] = set()
    for mod_name, mod in root.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            names.update(prefix + n for n, _ in mod.named_parameters(recurse=False))
        declared = getattr(mod, "no_weight_decay", None)
        if callable(declared):
            names.update(prefix + n for n in declared())
    return names


def param_groups(module: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Two AdamW groups over the trainable parameters: ``decay`` (matrices, kernels) and ``no_decay`` (norms,
    biases, embeddings, position and CLS tokens, temperatures). Each group keeps its parameter names.

    ``lr_scales`` (``{name prefix: scale}``, e.g. a tower's ``tune.lr_scale``) splits off ``decay@prefix`` /
    ``no_decay@prefix`` groups that carry an ``lr_scale``."""
    explicit = _module_no_decay(module)
    scales = dict(lr_scales or {})
    buckets: dict[tuple[str, str | None], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        skip = p.ndim <= 1 or name in explicit or any(k in name.split(".") or leaf == k for k in NO_DECAY_NAMES)
        prefix = next((k for k in scales if name.startswith(k)), None)
        buckets.setdefault(("no_decay" if skip else "decay", prefix), []).append((name, p))
    groups = []
    for prefix in [None, *scales]:
        for tag, wd in (("decay", weight_decay), ("no_decay", 0.0)):
            items = buckets.get((tag, prefix))
            if items:
                g = {"name": tag if prefix is None else f"{tag}@{prefix}", "params": [p for _, p in items],
                     "param_names": [n for n, _ in items], "weight_decay": wd}
                if prefix is not None:
                    g["lr_scale"] = scales[prefix]
                groups.append(g)
    return groups


def build_optimizer(module: nn.Module, *, lr: float, weight_decay: float, betas: Iterable[float] = (0.9, 0.98),
                    eps: float = 1e-6, fused: bool | None = None,
                    lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    groups = param_groups(module, weight_decay, lr_scales)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    for g in groups:
        if "lr_scale" in g:
            g["lr"] = lr * g["lr_scale"]
    kw = {"fused": fused} if fused is not None else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kw)


class WarmupCosine:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_ratio`` at
    ``total_steps`` (``schedule="constant"`` holds ``lr`` after warmup). Sets each group's ``lr`` in place."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0,
                 min_ratio: float = 0.0, schedule: str = "cosine"):
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        self.optimizer = optimizer
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.total, self.warmup, self.min_ratio, self.schedule = total_steps, warmup_steps, min_ratio, schedule
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()
