"""Typed errors. Every input problem names the file, the modality and what went wrong."""

from __future__ import annotations

from pathlib import Path


class AnybindError(Exception):
    """Base class of every error anybind raises on purpose."""


class InputError(AnybindError, ValueError):
    """A sample could not be read or transformed.

    ``source`` is the file path (or a short description such as ``"<text #3>"`` for in-memory input),
    ``modality`` the modality it was read as, ``problem`` a human sentence saying what was expected and
    what was found.
    """

    def __init__(self, source: str | Path | None, modality: str, problem: str):
        self.source = str(source) if source is not None else "<in-memory>"
        self.modality = modality
        self.problem = problem
        super().__init__(f"{self.modality} input {self.source!r}: {problem}")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.source, self.modality, self.problem))


class RegistryError(AnybindError, KeyError):
    """Unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CheckpointError(AnybindError, RuntimeError):
    """A checkpoint or index file is missing, damaged or does not match the model."""


class ContractError(AnybindError, ValueError):
    """An input contract a transform factory cannot use: a missing or unknown key, or a value of the wrong kind."""


class UsageError(AnybindError, ValueError):
    """A command-line argument or option that cannot work (a mistyped modality, a query path that does not exist)."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after keeping its work; the message says what was kept and how to resume.

    A :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it too. ``status`` is the exit status a command
    ends with (130 after SIGINT, 143 after SIGTERM); ``summary`` what the run had done, when it knows.
    """

    def __init__(self, message: str = "interrupted", status: int = 130, summary=None):
        super().__init__(message)
        self.status = int(status)
        self.summary = summary

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"

    def __reduce__(self):
        return (type(self), (str(self), self.status))
