"""Console entry points. Each is a thin wrapper; the work lives in importable library modules."""

from __future__ import annotations

import importlib


def _run(target: str) -> None:
    module, _, func = target.partition(":")
    getattr(importlib.import_module(module), func)()


def train_main() -> None:
    _run("anybind.train.recipe:main")


def embed_main() -> None:
    _run("anybind.retrieval.cli:embed_main")


def search_main() -> None:
    _run("anybind.retrieval.cli:search_main")


def eval_main() -> None:
    _run("anybind.eval.cli:main")


def demo_main() -> None:
    _run("anybind.demo:main")


def convert_main() -> None:
    _run("anybind.compat.convert:main")


def bench_main() -> None:
    _run("anybind.bench:main")


def prepare_digits_main() -> None:
    _run("anybind.data.digits:main")


def shard_main() -> None:
    _run("anybind.data.shards.cli:main")


def serve_main() -> None:
    _run("anybind.serve.cli:main")
