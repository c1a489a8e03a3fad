"""Text encoders: a causal Transformer over CLIP BPE tokens, pooled at the end-of-text token.

* CLIP (the text tower's design): Radford et al., https://arxiv.org/abs/2103.00020
* ImageBind uses the same tower for its text modality: https://arxiv.org/abs/2305.05665
* OpenCLIP (state_dicts :func:`checkpoint_filter_fn` maps): https://github.com/mlfoundations/open_clip

Input contract: ``{"context_length": 77, "tokenizer": "clip_bpe"}``; the transform produces int64 ids ``(77,)``
``SOT ... EOT 0 0 ...`` where EOT (49407) is the largest id, so the head pools the token at ``argmax(ids)``: with a
causal mask it is the only position that has seen the whole text (:class:`anybind.layers.TokenHead` with
``pool="eot"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anybind.layers import EncoderTower
from anybind.registry import register_encoder

from ._common import build_tower, load_pretrained

CLIP_VOCAB_SIZE = 49408
CLIP_CONTEXT_LENGTH = 77


class TextStem(nn.Module):
    """``ids (N, L) int64 -> (N, L', width)``: token embedding plus learned positions.

    ``trim_after_eot``: keep only the positions up to the batch's last end-of-text token (``L' <= L``). A causal
    trunk pooled at EOT gives exactly the same embedding without the padding behind it (no position up to EOT can
    see it), and a caption of 12 tokens then costs 12 positions instead of 77.
    """

    def __init__(self, width: int, *, vocab_size: int = CLIP_VOCAB_SIZE, context_length: int = CLIP_CONTEXT_LENGTH,
                 trim_after_eot: bool = False):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.trim_after_eot = trim_after_eot
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))

    def init_tokens(self) -> None:  # the token table gets the common trunc-normal(0.02) init
        nn.init.trunc_normal_(self.positional_embedding, std=0.01, a=-0.02, b=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[1] != self.context_length or ids.is_floating_point():
            raise ValueError(
                f"TextStem expects integer token ids (N, {self.context_length}), got {tuple(ids.shape)} {ids.dtype}; "
                "the text transform must use this encoder's input contract"
            )
        if self.trim_after_eot:
            length = int(ids.argmax(dim=-1).max()) + 1  # the head pools at argmax(ids): nothing after it matters
            ids = ids[:, :length]
            return self.token_embedding(ids) + self.positional_embedding[:length]
        return self.token_embedding(ids) + self.positional_embedding


_OPEN_CLIP_RENAMES = (
    (".ln_1.", ".norm1."), (".ln_2.", ".norm2."), (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"), (".attn.out_proj.", ".attn.proj."), (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."), (".ls_1.gamma", ".ls1"), (".ls_2.gamma", ".ls2"),
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], tower: EncoderTower) -> dict[str, torch.Tensor]:
    """Map an OpenCLIP text tower (or a whole OpenCLIP ``CLIP`` state_dict; the image half is dropped) onto a text tower.

    ``text_projection`` (``width x embed_dim``, applied as ``x @ P``) becomes ``head.proj.weight`` (its transpose).
    OpenCLIP's LayerNorms use ``eps=1e-5`` and anybind's ``1e-6``: outputs agree to about 1e-5, not bit for bit.
    An anybind tower's own state_dict passes unchanged.
    """
    if any(k.startswith(("stem.", "trunk.")) for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("visual.", "logit_scale", "logit_bias", "attn_mask")):
            continue
        key = key.removeprefix("text.")
        if key == "token_embedding.weight":
            key = "stem.token_embedding.weight"
        elif key == "positional_embedding":
            key, value = "stem.positional_embedding", value[: tower.stem.context_length]
        elif key == "text_projection":
            key, value = "head.proj.weight", value.t()
        elif key.startswith("text_projection."):
            key = "head.proj." + key.removeprefix("text_projection.")
        elif key.startswith("ln_final."):
            key = "head.norm." + key.removeprefix("ln_final.")
        elif key.startswith("transformer.resblocks."):
            key = "trunk.blocks." + key.removeprefix("transformer.resblocks.")
            for old, new in _OPEN_CLIP_RENAMES:
                key = key.replace(old, new)
        out[key] = value
    return out


TEXT_TRANSFORMER_SIZES = {
    "test": dict(width=32, depth=1, num_heads=2, embed_dim=32),
    "tiny": dict(width=192, depth=6, num_heads=3, embed_dim=128),
    "small": dict(width=384, depth=12, num_heads=6, embed_dim=384),
    "base": dict(width=768, depth=12, num_heads=12, embed_dim=512),
}


def build_text_transformer(
    *,
    width: int,
    depth: int,
    num_heads: int,
    embed_dim: int,
    context_length: int = CLIP_CONTEXT_LENGTH,
    vocab_size: int = CLIP_VOCAB_SIZE,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    layer_scale: float | None = None,
    tokenizer: str = "clip_bpe",
    pretrained: str | Path | None = None,
) -> EncoderTower:
    """A causal text Transformer tower with every knob as an argument.

    ``pretrained`` is a LOCAL OpenCLIP text-tower (or anybind text-tower) file of the same width, depth and heads.
    """
    stem = TextStem(width, vocab_size=vocab_size, context_length=context_length, trim_after_eot=True)
    contract = {"context_length": context_length, "tokenizer": tokenizer}
    tower = build_tower("text", stem, contract, width=width, depth=depth, num_heads=num_heads, embed_dim=embed_dim,
                        pool="eot", mlp_ratio=mlp_ratio, drop_path=drop_path, layer_scale=layer_scale, causal=True)
    return load_pretrained(tower, pretrained, checkpoint_filter_fn) if pretrained else tower


@register_encoder("text_transformer_test", modality="text")
def text_transformer_test(**kwargs) -> EncoderTower:
    """Width 32, one block, 77 tokens: for unit tests."""
    return build_text_transformer(**{**TEXT_TRANSFORMER_SIZES["test"], **kwargs})


@register_encoder("text_transformer_tiny", modality="text")
def text_transformer_tiny(**kwargs) -> EncoderTower:
    """Width 192, 6 causal blocks: the default text tower."""
    return build_text_transformer(**{**TEXT_TRANSFORMER_SIZES["tiny"], **kwargs})


@register_encoder("text_transformer_small", modality="text")
def text_transformer_small(**kwargs) -> EncoderTower:
    """Width 384, 12 causal blocks."""
    return build_text_transformer(**{**TEXT_TRANSFORMER_SIZES["small"], **kwargs})


@register_encoder("text_transformer_base", modality="text")
def text_transformer_base(**kwargs) -> EncoderTower:
    """Width 768, 12 causal blocks (the size of CLIP ViT-L/14's text tower)."""
    return build_text_transformer(**{**TEXT_TRANSFORMER_SIZES["base"], **kwargs})
