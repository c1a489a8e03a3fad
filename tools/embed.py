"""Embed a manifest or folder into a store and index it: ``python tools/embed.py input=... out=...`` (conf/embed.yaml)."""

from anybind.retrieval.cli import embed_main

if __name__ == "__main__":
    embed_main()
