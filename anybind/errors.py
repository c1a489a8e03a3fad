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


class ShapeMismatchError(CheckpointError):
    """A checkpoint tensor's shape differs from the one its sidecar's model has (``file``, ``tensor``, ``expected``
    (the model's shape), ``found`` (the file's))."""

    def __init__(self, file: str | Path, tensor: str, expected: tuple, found: tuple, detail: str = ""):
        self.file, self.tensor, self.expected, self.found = str(file), tensor, tuple(expected), tuple(found)
        super().__init__(f"checkpoint {self.file}: tensor {tensor!r} has shape {self.found} in the file but the model "
                         f"its sidecar describes expects {self.expected}{detail}")

    def __reduce__(self):
        return (type(self), (self.file, self.tensor, self.expected, self.found))


def torch_load_problem(exc: BaseException) -> str:
    """``torch.load(weights_only=True)``'s error in one line, without torch's advice to retry with
    ``weights_only=False``: that would run code from the file, which anybind never does."""
    text = str(exc)
    if "Weights only load failed" not in text:
        return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}".rstrip(": ")
    import re

    text = re.sub(r"\033\[[0-9;]*m", "", text).replace("WeightsUnpickler error:", "\n")
    advice = ("weights only load failed", "weights_only", "safe_globals", "trust", "documentation", "file an issue",
              "two options", "alternatively", "pytorch 2.6", "arbitrary code")
    parts = [p.strip(" .:\t") for line in text.splitlines() for p in re.split(r"(?<=\.)\s+", line)]
    kept = [p for p in parts if p and not any(a in p.lower() for a in advice)]
    detail = "; ".join(kept) or "an object type outside plain tensors and containers"
    return f"not a plain tensor file that loads without running code ({detail})"
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
