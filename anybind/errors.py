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
