"""Text transform: ``str`` -> CLIP BPE ids, int64 ``(context_length,)``.

A text longer than ``LIMITS.max_text_chars`` characters is cut (at its last whitespace before the limit, when
there is one) before it is tokenized: the tokenizer's cleaning runs over the whole string, and a 1 MB string would
take minutes to give 77 tokens. Every text up to the limit tokenizes exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import ContractError, InputError
from ..limits import LIMITS
from ._common import as_tensor, describe, positive_int, read_contract

__all__ = ["ClipTokenizerTransform", "cut_text", "get_tokenizer", "text_or_ids", "text_transform", "token_ids"]

# One tokenizer per process, built on first use. DataLoader workers are forked from the process that built it
# (ItemDataset / ManifestDataset build their transforms, and so the tokenizer, before any worker starts), so they
# share it instead of building their own.
_TOKENIZERS: dict[str, Any] = {}
_TOKENIZER_MODELS = {"clip_bpe": "ViT-B-32"}
_STANDALONE_MODULE = "_anybind_open_clip_tokenizer"


def _clip_bpe_tokenizer():
    """open_clip's CLIP BPE tokenizer (``SimpleTokenizer`` with its shipped vocabulary), exactly what
    ``open_clip.get_tokenizer("ViT-B-32")`` returns, without importing the open_clip package.

    Importing ``open_clip`` loads its models, torchvision and transformers: seconds of start-up for a tokenizer that
    needs none of them. Its ``tokenizer`` module depends only on ftfy, regex, numpy and torch, so it is loaded by
    itself from the installed package (and the package is imported as usual if that ever stops working).
    """
    import importlib.util
    import sys

    mod = sys.modules.get(_STANDALONE_MODULE)
    if mod is None:
        try:
            spec = importlib.util.find_spec("open_clip")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("open_clip is not installed")
            path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
            file_spec = importlib.util.spec_from_file_location(_STANDALONE_MODULE, path)
            mod = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(mod)
            sys.modules[_STANDALONE_MODULE] = mod
        except Exception:  # noqa: BLE001 - a layout this loader does not know: the regular import
            from open_clip import tokenizer as mod
    standalone = getattr(mod, "__name__", "") == _STANDALONE_MODULE
    existing = getattr(mod, "_tokenizer", None) if standalone else None  # our own copy built one on import
    if existing is not None and getattr(existing, "context_length", None) == mod.DEFAULT_CONTEXT_LENGTH:
        tokenizer = existing
    else:
        tokenizer = mod.SimpleTokenizer(context_length=mod.DEFAULT_CONTEXT_LENGTH)
    tokenizer.clean_fn = _plain_text_first(tokenizer.clean_fn)
    return tokenizer


_WORD_IDS: dict[str, dict[str, tuple[int, ...]]] = {}  # per tokenizer: word (as the tokenizer splits) -> its ids
_WORD_CACHE_SIZE = 200_000


def token_ids(text: str, context_length: int, name: str = "clip_bpe") -> torch.Tensor:
    """int64 ``(context_length,)``: start-of-text, ``text``'s BPE ids, end-of-text, zeros; a text too long is cut with
    end-of-text kept last. The same ids as ``get_tokenizer(name)([text], context_length)[0]``, several times faster
    on captions: each word's ids are kept once computed (a caption collection reuses a small vocabulary)."""
    tok = get_tokenizer(name)
    words = _WORD_IDS.setdefault(name, {})
    ids = [tok.sot_token_id]
    for word in tok.pat.findall(tok.clean_fn(text)):
        known = words.get(word)
        if known is None:
            pieces = "".join(tok.byte_encoder[b] for b in word.encode("utf-8"))
            known = tuple(tok.encoder[p] for p in tok.bpe(pieces).split(" "))
            if len(words) < _WORD_CACHE_SIZE:
                words[word] = known
        ids.extend(known)
    ids.append(tok.eot_token_id)
    if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = tok.eot_token_id
    out = torch.zeros(context_length, dtype=torch.long)
    out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def plain_clean(text: str) -> str | None:
    """What CLIP's text cleaning (ftfy repair, HTML unescaping, whitespace folding, lower case) gives for a text of
    printable ASCII without ``&``, where repair and unescaping have nothing to do; ``None`` for any other text."""
    if text.isascii() and text.isprintable() and "&" not in text:
        return " ".join(text.split()).lower()
    return None


def _plain_text_first(clean):
    """``clean`` with :func:`plain_clean` tried first: ftfy is most of a caption's tokenizing time, and for plain
    ASCII it returns its input (the ids are the same; ``tests/data`` checks it against the full cleaning)."""

    def fast_clean(text: str) -> str:
        plain = plain_clean(text)
        return clean(text) if plain is None else plain

    fast_clean.full = clean  # type: ignore[attr-defined]
    return fast_clean


def get_tokenizer(name: str = "clip_bpe"):
    """The cached tokenizer for ``name`` (``clip_bpe``: CLIP's BPE from open_clip, vocabulary shipped offline)."""
    if name not in _TOKENIZERS:
        if name not in _TOKENIZER_MODELS:
            raise ValueError(f"unknown tokenizer {name!r} (known: {', '.join(_TOKENIZER_MODELS)})")
        _TOKENIZERS[name] = _clip_bpe_tokenizer()
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

    def prepare(self) -> None:
        """Build the tokenizer now, in this process, so that DataLoader workers forked later share it."""
        get_tokenizer(self.tokenizer)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        raw = text_or_ids(raw, source, self.context_length)
        return raw if isinstance(raw, torch.Tensor) else token_ids(cut_text(raw), self.context_length, self.tokenizer)

    def __repr__(self) -> str:
        return f"ClipTokenizerTransform(context_length={self.context_length}, tokenizer={self.tokenizer!r})"


def text_or_ids(raw: Any, source: str | None, context_length: int) -> str | torch.Tensor:
    """A text transform's input checked: a non-empty string (returned as is) or ``context_length`` integer token ids
    (already tokenized: returned as int64); anything else raises :class:`~anybind.errors.InputError`."""
    raw = as_tensor(raw)
    if isinstance(raw, torch.Tensor):
        if raw.ndim == 1 and len(raw) == context_length and not raw.is_floating_point():
            return raw.long()
        raise InputError(source, "text", f"expected a string or {context_length} token ids, got {describe(raw)}")
    if not isinstance(raw, str):
        raise InputError(source, "text", f"expected a string, got {describe(raw)}")
    if not raw.strip():
        raise InputError(source, "text", "empty text")
    return raw


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
