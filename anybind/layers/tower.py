"""The encoder contract: stem -> trunk -> head -> postprocess, one tower per modality.

Every encoder anybind builds is an :class:`EncoderTower`; a plugin may return any ``nn.Module`` that offers the
same members (:class:`EncoderProtocol`).

Multi-clip inputs are declared, never guessed from tensor rank: when ``input_contract["clips"]`` is set, the
transform produces ``(S, ...)`` per sample, batches are ``(B, S, ...)``, and the tower embeds every clip,
L2-normalizes each, averages over clips and normalizes again. Outside autograd, a sample whose clips are all equal
(a recording shorter than one clip) has its clip embedded once.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@runtime_checkable
class EncoderProtocol(Protocol):
    modality: str
    embed_dim: int
    input_contract: dict[str, Any]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...
    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...
    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


class TokenHead(nn.Module):
    """Pool the trunk's tokens, LayerNorm, (dropout,) project to the shared space: ``(N, L, width) -> (N, embed_dim)``.

    ``pool``: ``"cls"`` the token at ``index`` (0: the CLS token); ``"mean"`` the mean of the normalized tokens;
    ``"eot"`` the token at ``argmax(ids)`` of the raw input ``x`` (CLIP text: end-of-text is the largest id).
    The LayerNorm is per token, so for ``cls``/``eot`` normalizing the pooled token is exact and cheaper.
    Parameters: ``norm`` and ``proj`` (``bias`` off by default), the names every anybind and ImageBind head uses.
    """

    POOLS = ("cls", "mean", "eot")

    def __init__(self, width: int, embed_dim: int, *, pool: str = "cls", index: int = 0, bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        if pool not in self.POOLS:
            raise ValueError(f"pool must be one of {', '.join(map(repr, self.POOLS))}, got {pool!r}")
        self.pool, self.index = pool, index
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.proj = nn.Linear(width, embed_dim, bias=bias)

    def forward(self, tokens: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.pool == "mean":
            pooled = self.norm(tokens).mean(dim=1)
        elif self.pool == "eot":
            if x is None:
                raise ValueError("TokenHead(pool='eot') needs the token ids the tower was given")
            pooled = self.norm(tokens[torch.arange(tokens.shape[0], device=tokens.device), x.argmax(dim=-1)])
        else:
            pooled = self.norm(tokens[:, self.index])
        return self.proj(self.drop(pooled))


class EncoderTower(nn.Module):
    """One modality's encoder, composed from a stem, a trunk and a head.

    * ``stem(x) -> tokens (N, L, width)``
    * ``trunk(tokens) -> tokens`` (an :class:`anybind.layers.Transformer` or any module with
      ``set_grad_checkpointing``)
    * ``head(tokens, x) -> (N, embed_dim)``; the raw input is passed for heads that pool by content (text EOT).
    """

    def __init__(
        self,
        *,
        modality: str,
        stem: nn.Module,
        trunk: nn.Module,
        head: nn.Module,
        embed_dim: int,
        input_contract: dict[str, Any],
        width: int | None = None,
    ):
        super().__init__()
        self.modality = modality
        self.stem, self.trunk, self.head = stem, trunk, head
        self.embed_dim = embed_dim
        self.width = width
        self.input_contract = dict(input_contract)

    @property
    def num_clips(self) -> int | None:
        return self.input_contract.get("clips")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.stem(x))

    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(tokens, x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_head(self.forward_features(x), x).float(), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.num_clips:
            return self._embed(x)
        B, S = x.shape[:2]
        flat = x.flatten(0, 1)
        if S > 1 and not torch.is_grad_enabled():
            same = (x == x[:, :1]).flatten(2).all(dim=2).all(dim=1)  # (B,): every clip equal to the first
            if bool(same.any()):
                # A file shorter than one clip gives S copies of the same clip: embed it once. The mean of equal
                # unit vectors is that vector, so the result is the same (to rounding) for a fraction of the work.
                rows = torch.arange(B * S, device=x.device).view(B, S)
                keep = torch.where(same[:, None], rows[:, :1].expand(B, S), rows)  # (B, S) row to take for each clip
                unique, inverse = torch.unique(keep.flatten(), return_inverse=True)
                z = self._embed(flat[unique])[inverse]
                return F.normalize(z.view(B, S, -1).mean(dim=1), dim=-1)
        z = self._embed(flat)
        return F.normalize(z.view(B, S, -1).mean(dim=1), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.trunk, "set_grad_checkpointing"):
            self.trunk.set_grad_checkpointing(enable)
