"""Retrieval as a service: ``anybind-serve``, an HTTP API and a web page for any-to-any search.

::

    from anybind.serve import create_app
    app = create_app(Index.load("runs/emb/index"), anybind.load("runs/demo/bind/checkpoints/last"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

FastAPI and uvicorn are imported only when an app is made (``pip install anybind[serve]``), so ``import anybind``
works without them. See ``docs/serve.md``.
"""

from __future__ import annotations

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeSettings":
        from .queries import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'anybind.serve' has no attribute {name!r}")
