"""Console entry points (``[project.scripts]`` in pyproject.toml).

Each command is one row below: its program name and the ``module:function`` that does the work. The module is
imported only when the command runs, and the function runs under :func:`anybind.console.run_command`, so every
command reports a user error in one line and exits 2, takes ``--debug``, and ends quietly on Ctrl-C.

This module imports nothing heavy, so ``anybind-<cmd> --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Callable

from .console import (DEBUG_ENV, DEBUG_FLAG, USER_ERROR_STATUS, ArgumentParser, current_prog, debug_enabled,
                      one_line, run_command, user_errors)

__all__ = ["ArgumentParser", "DEBUG_ENV", "DEBUG_FLAG", "USER_ERROR_STATUS", "current_prog", "debug_enabled",
           "one_line", "run_command", "user_errors"]


def command(prog: str, target: str) -> Callable[[], None]:
    """The console entry point that runs ``target`` (``"module:function"``) as the command ``prog``."""
    module, _, func = target.partition(":")

    def main() -> None:
        run_command(prog, lambda: getattr(importlib.import_module(module), func)())

    main.__doc__ = f"``{prog}``: runs :func:`{module}.{func}`."
    return main


train_main = command("anybind-train", "anybind.train.recipe:main")
embed_main = command("anybind-embed", "anybind.retrieval.cli:embed_main")
search_main = command("anybind-search", "anybind.retrieval.cli:search_main")
eval_main = command("anybind-eval", "anybind.eval.cli:main")
demo_main = command("anybind-demo", "anybind.demo:main")
convert_main = command("anybind-convert", "anybind.compat.convert:main")
bench_main = command("anybind-bench", "anybind.bench:main")
prepare_digits_main = command("anybind-prepare-digits", "anybind.data.digits:main")
shard_main = command("anybind-shard", "anybind.data.shards.cli:main")
serve_main = command("anybind-serve", "anybind.serve.cli:main")
