"""Text transform: ``str`` -> CLIP BPE ids, int64 ``(context_length,)``.

A text longer than ``LIMITS.max_text_chars`` characters is cut (at its last whitespace before the limit, when
there is one) before it is tokenized: the tokenizer's cleaning runs over the whole string, and a 1 MB string would
take minutes to give 77 tokens. Every text up to the limit tokenizes exactly as before.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ContractError, InputError
from ..limits import LIMITS
from ._common import _as_tensor, _describe, positive_int, read_contract

__all__ = ["ClipTokenizerTransform", "cut_text", "get_tokenizer", "text_transform"]

_TOKENIZERS: dict[str, Any] = {}  # one per process (DataLoader workers build their own on first use)
_TOKENIZER_MODELS = {"clip_bpe": "ViT-B-32"}


def get_tokenizer(name: str = "clip_bpe"):
    """The cached tokenizer for ``name`` (``clip_bpe``: CLIP's BPE from open_clip, vocabulary shipped offline)."""
    if name not in _TOKENIZERS:
        if name not in _TOKENIZER_MODELS:
            raise ValueError(f"unknown tokenizer {name!r} (known: {', '.join(_TOKENIZER_MODELS)})")
        import open_clip

        _TOKENIZERS[name] = open_clip.get_tokenizer(_TOKENIZER_MODELS[name])
    return _TOKENIZERS[name]


class ClipTokenizerTransform:
    """``str`` -> int64 ``(context_length,)``: SOT, tokens, EOT, zero padding; a long text keeps EOT last.

    An int64 tensor of exactly ``context_length`` ids is accepted as already tokenized.
    """

    def __init__(self, context_length: int = 77, tokenizer: str = "clip_bpe"):
        if tokenizer not in _TOKENIZER_MODELS:
            raise ValueError(f"unknown tokenizer {tokenizer!r} (known: {', '.join(_TOKENIZER_MODELS)})")
        self.context_length = int(context_length)
        self.tokenizer = tokenizer

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        raw = _as_tensor(raw)
        if isinstance(raw, torch.Tensor):
            if raw.ndim == 1 and len(raw) == self.context_length and not raw.is_floating_point():
                return raw.long()
            raise InputError(source, "text", f"expected a string or {self.context_length} token ids, got "
                                             f"{_describe(raw)}")
        if not isinstance(raw, str):
            raise InputError(source, "text", f"expected a string, got {_describe(raw)}")
        if not raw.strip():
            raise InputError(source, "text", "empty text")
        return get_tokenizer(self.tokenizer)([cut_text(raw)], context_length=self.context_length)[0]

    def __repr__(self) -> str:
        return f"ClipTokenizerTransform(context_length={self.context_length}, tokenizer={self.tokenizer!r})"


def cut_text(text: str, max_chars: int | None = None) -> str:
    """``text`` if it has at most ``max_chars`` (default ``LIMITS.max_text_chars``) characters, else its first
    ``max_chars`` characters, ended at the last whitespace inside them when there is one (no half word)."""
    limit = LIMITS.max_text_chars if max_chars is None else int(max_chars)
    if len(text) <= limit:
        return text
    head = text[:limit]
    if not text[limit].isspace():
        cut = limit - 1
        while cut > 0 and not head[cut].isspace():
            cut -= 1
        if cut > 0:
            head = head[:cut]
    return head


def text_transform(contract: dict) -> ClipTokenizerTransform:
    """Contract keys: ``context_length``, ``tokenizer`` (both required)."""
    name = "text_transform"
    c = read_contract(contract, name, ("context_length", "tokenizer"))
    try:
        return ClipTokenizerTransform(positive_int(c["context_length"], "context_length", name), c["tokenizer"])
    except ValueError as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError(f"{name}: {exc}") from None
