"""Transformer blocks shared by every encoder.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, so PyTorch picks the fused
kernel (flash / memory-efficient on CUDA, the fused CPU kernel otherwise). Parameter names follow timm's
Vision Transformer (``blocks.N.norm1``, ``attn.qkv``, ``attn.proj``, ``mlp.fc1`` ...) so that timm ViT weights map
onto these blocks by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p`` while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused kernel.

    ``bias_kv`` appends one learnable key/value token (the ``add_bias_kv`` variant some audio/depth encoders use).
    """

    def __init__(self, width: int, num_heads: int, *, qkv_bias: bool = True, bias_kv: bool = False):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        if bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, width))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, width))
        else:
            self.bias_k = self.bias_v = None

    def forward(self, x: torch.Tensor, *, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(B, 1, C)], dim=1)
            v = torch.cat([v, self.bias_v.expand(B, 1, C)], dim=1)
        heads = lambda t: t.view(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if causal and k.shape[2] != L:
            # causal with an extra bias token: the bias token stays visible to every query
            mask = torch.ones(L, k.shape[2], dtype=torch.bool, device=x.device).tril()
            mask[:, L:] = True
            attn_mask = mask if attn_mask is None else attn_mask & mask
            causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    """Pre-norm transformer block with optional layer scale and stochastic depth."""

    def __init__(self, width: int, num_heads: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True, bias_kv: bool = False, layer_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, num_heads, qkv_bias=qkv_bias, bias_kv=bias_kv)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        if layer_scale:
            self.ls1 = nn.Parameter(torch.full((width,), float(layer_scale)))
            self.ls2 = nn.Parameter(torch.full((width,), float(layer_scale)))
        else:
            self.ls1 = self.ls2 = None

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attn(self.norm1(x), causal=causal, attn_mask=attn_mask)
        x = x + self.drop_path(a if self.ls1 is None else a * self.ls1)
        m = self.mlp(self.norm2(x))
        return x + self.drop_path(m if self.ls2 is None else m * self.ls2)


class Transformer(nn.Module):
    """A stack of :class:`Block` with optional gradient checkpointing and a final norm.

    ``causal=True`` makes every block attend only to earlier tokens (text).
    """

    def __init__(
        self,
        width: int,
        depth: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        causal: bool = False,
        qkv_bias: bool = True,
        bias_kv: bool = False,
        layer_scale: float | None = None,
        final_norm: bool = True,
    ):
        super().__init__()
        self.width, self.depth, self.num_heads, self.causal = width, depth, num_heads, causal
        # plain Python floats (not torch.linspace) so that towers can also be built on the meta device
        rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path] * depth
        self.blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio=mlp_ratio, drop_path=r, qkv_bias=qkv_bias, bias_kv=bias_kv, layer_scale=layer_scale)
            for r in rates
        )
        self.norm = nn.LayerNorm(width, eps=1e-6) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, self.causal, attn_mask, use_reentrant=False)
            else:
                x = blk(x, self.causal, attn_mask)
        return self.norm(x)

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (multiply-add = 2 FLOPs): projections, MLP and attention scores."""
        w = self.width
        mlp_hidden = self.blocks[0].mlp.fc1.out_features if self.depth else 0
        per_block = 2 * (4 * w * w + 2 * w * mlp_hidden) + 2 * 2 * seq_len * w
        return float(per_block * self.depth)
