"""Errors of evaluation: a user-facing problem (one line on the command line, exit status 2)."""

from __future__ import annotations

from ..errors import AnybindError


class EvaluationError(AnybindError, ValueError):
    """An evaluation cannot run as asked: no rows in the requested split, nothing to score, a bad option."""


class BenchmarkError(EvaluationError):
    """A benchmark copy does not have the layout its adapter reads; the message names what is missing."""
