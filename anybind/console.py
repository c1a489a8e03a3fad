"""What every anybind command does on the console: one-line user errors, ``--debug``, interrupts.

Every command runs through :func:`run_command`, which gives all of them the same behaviour on failure:

* a *user error* (an :class:`anybind.errors.AnybindError`, a bad value or path, a configuration that does not
  compose) is printed as one line, ``anybind-<cmd>: error: <message>``, and the process exits with status 2;
* ``--debug`` anywhere on the command line (it is removed before the command parses its arguments) or
  ``ANYBIND_DEBUG=1`` prints the traceback as well;
* Ctrl-C (or SIGTERM, for the commands that handle it) ends with a short note and status 130 (143), never with a
  traceback; commands that keep work on interruption (``anybind-embed``, ``anybind-train``) say what was kept and
  how to resume (:class:`anybind.errors.Interrupted`);
* any other exception is a bug: its traceback is printed and the status is 1.

This module imports nothing heavy, so ``anybind-<cmd> --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, NoReturn

from .errors import AnybindError, Interrupted

DEBUG_FLAG = "--debug"
DEBUG_ENV = "ANYBIND_DEBUG"
USER_ERROR_STATUS = 2


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _take_debug_flag(argv: list[str]) -> bool:
    """Remove ``--debug`` from ``argv`` in place; whether it was there."""
    found = DEBUG_FLAG in argv[1:]
    argv[1:] = [a for a in argv[1:] if a != DEBUG_FLAG]
    return found


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input or the command line is wrong", not "anybind has a bug"."""
    types: list[type[BaseException]] = [AnybindError, ValueError, FileNotFoundError, FileExistsError,
                                        NotADirectoryError, IsADirectoryError, PermissionError]
    for module, names in (("omegaconf.errors", ("OmegaConfBaseException",)),
                          ("hydra.errors", ("HydraException",))):
        mod = sys.modules.get(module)  # only if the command loaded it: never imported just to be checked
        types += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(types)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (Hydra and OmegaConf messages span several)."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and not isinstance(exc, AnybindError) and len(exc.args) == 1:
        text = str(exc.args[0])
    if not text:
        text = type(exc).__name__
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf") and str(cause).strip() not in text:
        text = f"{text} ({str(cause).strip()})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("full_key:")
             and not ln.strip().startswith("object_type=")]
    return "; ".join(lines) if lines else type(exc).__name__


def _fail(prog: str, message: str, status: int, debug: bool) -> NoReturn:
    if debug:
        import traceback

        traceback.print_exc()
    hint = "" if debug else f" (add {DEBUG_FLAG} for the traceback)"
    print(f"{prog}: error: {message}{hint}", file=sys.stderr, flush=True)
    raise SystemExit(status)


_PROG: list[str] = []  # the command being run (set by run_command)


def current_prog() -> str:
    return _PROG[-1] if _PROG else os.path.basename(sys.argv[0] or "anybind")


@contextlib.contextmanager
def user_errors(prog: str | None = None):
    """Report a user error raised inside the block as one line and exit 2.

    :func:`run_command` does this for every command; a Hydra task function needs it too, because Hydra prints its
    own "Error executing job" line for any exception that leaves the task.
    """
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - sorted below
        if isinstance(exc, _user_error_types()):
            _fail(prog or current_prog(), one_line(exc), USER_ERROR_STATUS, debug_enabled())
        raise


def run_command(prog: str, main: Callable[[], object]) -> None:
    """Run ``main()`` (which reads ``sys.argv``) with the error handling described in the module docstring."""
    _PROG.append(prog)
    argv = sys.argv
    debug = _take_debug_flag(argv) or debug_enabled()
    if debug:
        os.environ[DEBUG_ENV] = "1"  # child processes (DataLoader workers, torchrun ranks) see it too
    hydra_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing (and exiting 1): handled below
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("message"): a user error written the old way
            _fail(prog, exc.code.removeprefix(f"{prog}: "), USER_ERROR_STATUS, debug)
        raise
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.status) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except BaseException as exc:  # noqa: BLE001 - sorted into user errors and bugs
        if isinstance(exc, _user_error_types()):
            _fail(prog, one_line(exc), USER_ERROR_STATUS, debug)
        raise
    finally:
        _PROG.pop()
        if hydra_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = hydra_full_error


class ArgumentParser(argparse.ArgumentParser):
    """argparse with anybind's error format: one line naming the command, status 2, ``--debug`` listed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="on an error, print the traceback as well "
                                                               f"(or set {DEBUG_ENV}=1)")

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_STATUS)
