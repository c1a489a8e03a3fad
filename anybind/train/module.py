"""The unit a training run optimizes, and that DDP / FSDP wrap: the model's towers plus the contrastive loss (whose
temperatures are trained and synchronized like any weight)."""

from __future__ import annotations

from typing import Collection, Iterable

import torch
from torch import nn

from ..losses import ContrastiveLoss, LossOutput


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

    def embed_rows(self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                   modalities: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """``{m: (B, D)}`` for each modality of ``valid`` (or of ``modalities``): the present rows embedded, the
        absent rows zeros."""
        B = len(next(iter(valid.values())))
        feats = {}
        for m, v in valid.items():
            if modalities is not None and m not in modalities:
                continue
            x = inputs.get(m)
            if x is None:  # no row of this rank has it; other ranks may: keep the collective calls aligned
                feats[m] = torch.zeros(B, self.model.embed_dim, device=v.device)
                continue
            z = self.embed(m, x)
            if z.shape[0] != B:
                z = z.new_zeros(B, z.shape[1]).index_copy(0, v.nonzero().squeeze(1), z)
            feats[m] = z
        return feats

    def forward(self, inputs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> LossOutput:
        out = self.loss(self.embed_rows(inputs, valid), valid)
        if not out.loss.requires_grad:  # every row failed: a zero that still reaches backward (DDP needs it)
            anchor = next(p for p in self.parameters() if p.requires_grad)
            out.loss = out.loss + 0.0 * anchor.sum()
        return out
