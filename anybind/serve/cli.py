"""``anybind-serve --index DIR --checkpoint PATH [--host 127.0.0.1] [--port 8000] [--token T]``.

Loads the index and the model once, then serves the API and the page with uvicorn. It binds the loopback
interface unless ``--host`` says otherwise; a token can also come from ``ANYBIND_SERVE_TOKEN`` or ``--token-file``
(a token on the command line is visible to every user of the machine in the process list).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

log = logging.getLogger("anybind.serve")


def parser() -> argparse.ArgumentParser:
    from .service import ServeSettings

    d = ServeSettings()
    p = argparse.ArgumentParser(
        prog="anybind-serve", description="Serve any-to-any search over an anybind index: an HTTP API and a web page.",
        epilog="example: anybind-serve --index runs/emb/index --checkpoint runs/demo/bind/checkpoints/last --port 8000")
    p.add_argument("--index", required=True, help="a saved index folder, or an embedding store (indexed in memory)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the one recorded in the index)")
    p.add_argument("--encoders", help="modality=registry_name,... : a random model instead of a checkpoint (tests)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (prefer ANYBIND_SERVE_TOKEN or --token-file)")
    p.add_argument("--token-file", help="read the token from this file")
    p.add_argument("--device", default="cpu", help="where the towers run (cpu, cuda, cuda:1, ...)")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / (1 << 20), help="largest uploaded file")
    p.add_argument("--max-queries", type=int, default=d.max_queries, help="queries combined in one search")
    p.add_argument("--max-k", type=int, default=d.max_k)
    p.add_argument("--decode-timeout", type=float, default=d.decode_timeout, help="seconds to decode one upload")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout, help="seconds for one search")
    p.add_argument("--decode-workers", type=int, default=d.decode_workers,
                   help="processes decoding uploads; one past its time limit is killed (0: decode in threads)")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help="how long a query waits for others to share its tower call")
    p.add_argument("--max-batch", type=int, default=d.max_batch)
    p.add_argument("--preview-cache", help="folder for cached previews (default: memory only)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def build(args: argparse.Namespace):
    """``(app, settings)`` from parsed arguments: the index and the model load here, once."""
    from ..errors import CheckpointError
    from ..retrieval.jobs import load_model
    from ..retrieval.index import Index, build_index
    from .app import create_app
    from .service import ServeSettings

    path = Path(args.index)
    if not path.exists():
        raise CheckpointError(f"index {path} does not exist")
    index = build_index(path, kind="auto") if (path / "store.json").exists() else Index.load(path)
    encoders = dict(kv.split("=", 1) for kv in args.encoders.split(",")) if args.encoders else None
    checkpoint = args.checkpoint or (None if encoders else index.model.get("checkpoint"))
    if not checkpoint and not encoders:
        raise CheckpointError(f"index {path} records no checkpoint; pass --checkpoint")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(checkpoint, encoders, args.device)
    if model.embed_dim != index.embed_dim:
        raise CheckpointError(f"model {checkpoint or encoders} embeds to {model.embed_dim} dims but index {path} holds "
                              f"{index.embed_dim}-d vectors: it was embedded with another model")
    token = args.token or os.environ.get("ANYBIND_SERVE_TOKEN") or None
    if args.token_file:
        token = Path(args.token_file).read_text().strip() or None
    settings = ServeSettings(
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_body_bytes=int(args.max_upload_mb * (1 << 20)) * 2 + (1 << 20),
        max_queries=args.max_queries, max_k=args.max_k, decode_timeout=args.decode_timeout,
        request_timeout=args.request_timeout, decode_workers=args.decode_workers,
        batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, preview_cache=args.preview_cache)
    app = create_app(index, model, settings, token=token, checkpoint=str(checkpoint) if checkpoint else None)
    return app, index, model, token


def main(argv: Sequence[str] | None = None) -> None:
    from ..errors import AnybindError

    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"anybind-serve: {exc.name} is not installed; pip install 'anybind[serve]'") from None
    try:
        app, index, model, token = build(args)
    except (AnybindError, OSError, ValueError) as exc:
        print(f"anybind-serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("serving on %s without a token: anyone who can reach this address can search the index and read "
                    "its files; pass --token (or ANYBIND_SERVE_TOKEN)", args.host)
    print(f"anybind-serve: {len(index)} items ({', '.join(f'{m} {len(p)}' for m, p in index.parts.items())}), "
          f"towers {', '.join(model.modalities)}; http://{args.host}:{args.port}/", flush=True)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug")


if __name__ == "__main__":
    main()
