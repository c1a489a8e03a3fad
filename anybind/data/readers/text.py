"""UTF-8 text files -> ``str``; at most ``LIMITS.max_text_bytes`` bytes of a file are read."""

from __future__ import annotations

import codecs
from pathlib import Path

from ...errors import InputError
from ..files import check_file
from ..limits import LIMITS

__all__ = ["read_text"]


def read_text(path: str | Path) -> str:
    """UTF-8 text (a byte-order mark is dropped), stripped of leading and trailing whitespace.

    Only the first ``LIMITS.max_text_bytes`` bytes are read: a text becomes at most a few dozen tokens, so the
    rest of a huge file could never reach the model. A character cut at that boundary is dropped.
    """
    path = check_file(path, "text")
    limit = LIMITS.max_text_bytes
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    cut = len(data) > limit
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        text = decoder.decode(data[:limit] if cut else data, final=not cut)
    except UnicodeDecodeError as exc:
        raise InputError(path, "text", f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    text = text.strip()
    if not text:
        raise InputError(path, "text", "file holds only whitespace; expected some text")
    return text
