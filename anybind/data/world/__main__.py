"""``python -m anybind.data.world OUT``: generate (or reuse) the synthetic world in folder OUT."""

from __future__ import annotations

import argparse
import json
import time

from .generate import WorldParams, generate_world


def main(argv: list[str] | None = None) -> None:
    defaults = WorldParams()
    parser = argparse.ArgumentParser(prog="python -m anybind.data.world", description=__doc__.split(":")[1].strip())
    parser.add_argument("out", help="output folder (manifests <split>.jsonl and the files go here)")
    for name, value in vars(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value, metavar=type(value).__name__.upper())
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="regenerate even when the cache matches")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = vars(parser.parse_args(argv))
    out, quiet = args.pop("out"), args.pop("quiet")
    start = time.perf_counter()
    info = generate_world(out, progress=not quiet, **args)
    elapsed = time.perf_counter() - start
    verb = "reused" if info.reused else f"generated in {elapsed:.1f} s"
    print(f"world {verb}: {info.root}")
    print(json.dumps({"counts": info.counts, "manifests": {s: str(p) for s, p in info.manifests.items()}}, indent=2))


if __name__ == "__main__":
    main()
