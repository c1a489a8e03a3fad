"""Contrastive losses that bind modality pairs in one embedding space.

* **InfoNCE** (CLIP): symmetric cross-entropy over the similarity matrix of a pair, scaled by a learnable logit
  scale ``exp(log_scale)`` (= 1 / temperature) clamped at ``max_logit_scale`` (100, as in CLIP).
* **SigLIP**: an independent sigmoid per (row, column) with a learnable scale and bias.

The temperature belongs to the loss, not to an encoder: one per pair by default (or one shared by all pairs).

Distributed runs use the *local loss* formulation: each rank scores its own rows against the columns of every
rank (features are all-gathered with gradient; the target of local row ``i`` is column ``rank * B + i``), so memory
grows linearly with the world size and, after DDP averages gradients, loss and gradients equal those of one
process on the global batch.

Rows may be missing (a sample without that modality, or a sample that failed to load): every function takes a
``valid`` mask; invalid rows are not scored and invalid columns are not candidates. A pair's loss is normalized by
the number of rows valid for both modalities over the whole global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import dist


def pair_name(a: str, b: str) -> str:
    """``"image-audio"``: the key of a pair in losses, logs and configs (order as given: anchor first)."""
    return f"{a}-{b}"


def _pair_terms(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None):
    """Shared set-up: gathered columns, local valid rows, their global targets, the global valid count."""
    B = a.shape[0]
    if valid is None:
        valid = torch.ones(B, dtype=torch.bool, device=a.device)
    world = dist.world_size()
    a_all, b_all = dist.gather_with_grad(a), dist.gather_with_grad(b)
    valid_all = dist.all_gather_no_grad(valid.to(torch.uint8)).bool()
    rows = valid.nonzero().squeeze(1)
    targets = rows + dist.rank() * B
    return a_all, b_all, valid_all, rows, targets, world


def infonce_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between row-aligned ``a`` and ``b`` ``(B, D)`` (unit vectors); returns ``(loss, n)``.

    ``n`` is the global number of valid rows; with ``n == 0`` the loss is a differentiable zero.
    """
    a, b = a.float(), b.float()
    a_all, b_all, valid_all, rows, targets, world = _pair_terms(a, b, valid)
    n = valid_all.sum()
    if int(n) == 0:
        return (a.sum() + b.sum()) * 0.0, n
    dead = ~valid_all.unsqueeze(0)
    logits_ab = (logit_scale * a[rows] @ b_all.T).masked_fill(dead, float("-inf"))
    logits_ba = (logit_scale * b[rows] @ a_all.T).masked_fill(dead, float("-inf"))
    total = F.cross_entropy(logits_ab, targets, reduction="sum") + F.cross_entropy(logits_ba, targets, reduction="sum")
    return total * (0.5 * world) / n, n


def siglip_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid loss (SigLIP): every (row, column) is a binary match / no-match decision; returns ``(loss, n)``.

    The local rows against all columns cover every global pair exactly once, so no symmetric term is needed.
    """
    a, b = a.float(), b.float()
    a_all, b_all, valid_all, rows, targets, world = _pair_terms(a, b, valid)
    n = valid_all.sum()
    if int(n) == 0:
        return (a.sum() + b.sum()) * 0.0, n
    logits = logit_scale * a[rows] @ b_all.T + bias
    signs = torch.full_like(logits, -1.0)
    signs[torch.arange(rows.numel(), device=a.device), targets] = 1.0
    ll = F.logsigmoid(signs * logits) * valid_all.unsqueeze(0).to(logits.dtype)
    return -ll.sum() * world / n, n


@dataclass
class LossOutput:
    """``loss``: weighted sum over pairs (call backward on it); ``pairs``: each pair's loss (detached);
    ``counts``: rows that were valid for each pair over the global batch."""

    loss: torch.Tensor
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


class ContrastiveLoss(nn.Module):
    """Loss over a set of modality pairs, each with a weight and a learnable (clamped) temperature.

    ``pairs``: ``[("image", "audio"), ...]``; ``kind``: ``"infonce"`` or ``"siglip"``;
    ``weights``: ``{pair_name: weight}`` (default 1). Temperatures start at ``init_temperature``
    (logit scale ``1 / T``) and the scale is clamped to ``max_logit_scale``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        kind: str = "infonce",
        weights: Mapping[str, float] | None = None,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learn_temperature: bool = True,
        shared_temperature: bool = False,
        init_bias: float = -10.0,
    ):
        super().__init__()
        if kind not in ("infonce", "siglip"):
            raise ValueError(f"loss kind must be 'infonce' or 'siglip', got {kind!r}")
        if not pairs:
            raise ValueError("a contrastive loss needs at least one modality pair")
        self.kind = kind
        self.pairs = [(str(a), str(b)) for a, b in pairs]
        names = [pair_name(a, b) for a, b in self.pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pairs in {names}")
        weights = dict(weights or {})
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"loss weights name pairs that are not trained: {sorted(unknown)} (pairs: {names})")
        self.weights = {n: float(weights.get(n, 1.0)) for n in names}
        self.max_log_scale = math.log(max_logit_scale)
        self.shared = shared_temperature
        keys = ["shared"] if shared_temperature else names
        init = math.log(1.0 / init_temperature)
        # shape (1,) rather than scalars: FSDP cannot shard 0-d parameters
        self.log_scale = nn.ParameterDict(
            {k: nn.Parameter(torch.full((1,), init), requires_grad=learn_temperature) for k in keys}
        )
        self.bias = (
            nn.ParameterDict({k: nn.Parameter(torch.full((1,), float(init_bias))) for k in keys})
            if kind == "siglip" else None
        )

    def _key(self, name: str) -> str:
        return "shared" if self.shared else name

    def logit_scale(self, name: str) -> torch.Tensor:
        return self.log_scale[self._key(name)].clamp(max=self.max_log_scale).exp().squeeze(0)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the raw parameters inside the clamp after an optimizer step (CLIP does the same)."""
        for p in self.log_scale.values():
            p.clamp_(0.0, self.max_log_scale)

    def temperatures(self) -> dict[str, float]:
        return {n: float(1.0 / self.logit_scale(n).detach()) for n in (pair_name(a, b) for a, b in self.pairs)}

    def forward(self, features: Mapping[str, torch.Tensor], valid: Mapping[str, torch.Tensor] | None = None) -> LossOutput:
        """``features``: modality -> ``(B, D)`` unit vectors (same ``B`` for all); ``valid``: modality -> ``(B,)``.

        Pairs whose modalities are absent from ``features`` are skipped (every rank must see the same modalities).
        """
        valid = valid or {}
        out = LossOutput(loss=torch.zeros((), device=next(iter(features.values())).device))
        with torch.autocast(device_type=out.loss.device.type, enabled=False):
            for a, b in self.pairs:
                if a not in features or b not in features:
                    continue
                name = pair_name(a, b)
                va, vb = valid.get(a), valid.get(b)
                both = va & vb if va is not None and vb is not None else (va if va is not None else vb)
                scale = self.logit_scale(name)
                if self.kind == "infonce":
                    loss, n = infonce_loss(features[a], features[b], scale, both)
                else:
                    loss, n = siglip_loss(features[a], features[b], scale, self.bias[self._key(name)].squeeze(0), both)
                out.loss = out.loss + self.weights[name] * loss
                out.pairs[name] = loss.detach()
                out.counts[name] = n
        return out
