"""Retrieval matrix + zero-shot metrics: ``python tools/evaluate.py manifest=... model.checkpoint=...``."""

from anybind.retrieval.cli import eval_main

if __name__ == "__main__":
    eval_main()
