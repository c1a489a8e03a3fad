"""``anybind-embed`` (Hydra: ``conf/embed.yaml``) and ``anybind-search`` (argparse), thin layers over
:mod:`anybind.retrieval`; ``run_embed(cfg)`` takes a composed config so that tests and notebooks can call it without
a command line. ``anybind-eval`` lives in :mod:`anybind.eval.cli` (``run_evaluate`` is re-exported here).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("anybind.retrieval")


from .jobs import hydra_main, load_model, resume_command, run_embed


def run_evaluate(cfg, out_dir: str | Path | None = None) -> dict:
    """``anybind-eval``: see :func:`anybind.eval.cli.run_evaluate` (kept here for existing imports)."""
    from ..eval.cli import run_evaluate as run

    return run(cfg, out_dir)

__all__ = ["embed_main", "eval_main", "hydra_main", "load_model", "resume_command", "run_embed", "run_evaluate",
           "run_search", "search_main", "search_parser"]


def embed_main() -> None:
    hydra_main("embed", lambda cfg, _: run_embed(cfg))


def eval_main() -> None:
    from ..eval.cli import main

    main()


# ----------------------------------------------------------------------------------------------- search


def search_parser() -> argparse.ArgumentParser:
    from ..console import ArgumentParser

    p = ArgumentParser(
        prog="anybind-search",
        description="Query an index with files or texts of any modality; several queries combine as a weighted sum. "
                    "By default the results are the top hits of every modality other than the query's own "
                    "(a caption finds images, sounds, videos, point clouds); --target chooses the modalities.",
        epilog='examples: anybind-search --index runs/emb/index -q "a dog barking" -k 5 --sheet hits.png   '
               "(top 5 images, top 5 sounds, ...);   anybind-search --index runs/emb/index -q image:cat.png "
               '-q "text:on grass" -w 1 -w 0.5 --target image --target video -k 10')
    p.add_argument("--index", required=True, help="a saved index folder, or an embedding store (indexed in memory)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the one recorded in the index)")
    p.add_argument("--encoders", help="modality=registry_name,... : a random model instead of a checkpoint (tests)")
    p.add_argument("--query", "-q", action="append", required=True,
                   help="MODALITY:VALUE (a path, or the text for text); a bare path infers the modality, other words "
                        "are text (a missing file is an error; text:WORDS searches for any string as text)")
    p.add_argument("--weight", "-w", action="append", type=float, help="one per --query (default 1 each)")
    p.add_argument("--target", "-t", action="append", metavar="MODALITY",
                   help="search only this modality (repeatable; one ranking over them); 'all': one ranking over every "
                        "modality, the query's own included. Default: top k of each other modality")
    p.add_argument("-k", type=int, default=10, help="hits per modality (cross-modal default) or in all (--target)")
    p.add_argument("--json", dest="json_out", help="write the results as JSON to this file (default: stdout)")
    p.add_argument("--sheet", help="write a contact-sheet PNG of the results")
    p.add_argument("--device", default="cpu")
    return p


def _check_target_names(targets: Sequence[str] | None) -> None:
    """Every ``--target`` is a modality name (or ``all``); a mistyped one fails before anything is loaded."""
    import difflib

    from ..errors import UsageError
    from ..modality import list_modalities

    known = list_modalities()
    for t in targets or ():
        if t != "all" and t not in known:
            close = difflib.get_close_matches(t, known, n=1)
            hint = f"; did you mean --target {close[0]}?" if close else ""
            raise UsageError(f"--target {t!r} is not a modality (modalities: {', '.join(known)}, or all){hint}")


def _check_targets(targets: Sequence[str] | None, index) -> list[str] | None:
    """``--target`` values -> modality names (``None``: cross-modal default; ``all``: every modality)."""
    from ..errors import UsageError

    if not targets:
        return None
    if "all" in targets:
        return list(index.modalities)
    missing = [t for t in targets if t not in index.modalities]
    if len(missing) == len(targets):
        raise UsageError(f"the index holds no {', '.join(missing)} vectors; it holds {', '.join(index.modalities)}")
    return list(targets)


def run_search(argv: Sequence[str] | None = None) -> dict:
    from ..errors import UsageError

    args = search_parser().parse_args(argv)
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    from .search import as_queries

    _check_target_names(args.target)
    queries = as_queries(args.query)  # a mistyped path fails here, before anything is loaded
    if args.weight and len(args.weight) != len(queries):
        raise UsageError(f"{len(queries)} --query but {len(args.weight)} --weight; give one per query")
    from .index import Index, build_index
    from .search import cross_modal_search, cross_modal_targets, search

    path = Path(args.index)
    if not path.exists():
        raise UsageError(f"--index {path}: no such folder")
    index = build_index(path, kind="auto") if (path / "store.json").exists() else Index.load(path)
    targets = _check_targets(args.target, index)
    encoders = dict(kv.split("=", 1) for kv in args.encoders.split(",")) if args.encoders else None
    checkpoint = args.checkpoint or (None if encoders else index.model.get("checkpoint"))
    if not checkpoint and not encoders:
        raise UsageError("the index records no checkpoint; pass --checkpoint")
    needed = list(dict.fromkeys(m for m, _ in queries))  # only the towers the queries go through
    if encoders:
        missing = [m for m in needed if m not in encoders]
        if missing:
            raise UsageError(f"--encoders names no tower for the query modality {', '.join(missing)}")
        encoders = {m: encoders[m] for m in needed}
    model = load_model(checkpoint, encoders, args.device, modalities=None if encoders else needed)
    weights = args.weight or [1.0] * len(queries)
    result: dict[str, Any] = {"queries": [{"modality": m, "value": str(v)} for m, v in queries], "weights": weights,
                              "k": args.k}
    if targets is None:
        chosen, note = cross_modal_targets(index, needed)
        groups = cross_modal_search(model, index, queries, weights=args.weight, k=args.k, modalities=chosen)
        hits = [h for g in groups.values() for h in g]
        result.update({"mode": "cross-modal", "note": note, "targets": chosen,
                       "by_modality": {m: [h.to_dict() for h in g] for m, g in groups.items()}})
    else:
        groups = None
        hits = search(model, index, queries, weights=args.weight, k=args.k, modalities=targets)
        note = f"one ranking over {', '.join(targets)}"
        result.update({"mode": "all" if "all" in args.target else "targets", "note": note, "targets": targets})
    result["hits"] = [h.to_dict() for h in hits]
    print(f"anybind-search: {note}", file=sys.stderr, flush=True)
    if args.sheet:
        from .search import contact_sheet

        title = " + ".join(f"{w:g} x {m} " + (f'"{v}"' if m == "text" else Path(str(v)).name)
                           for (m, v), w in zip(queries, weights))
        result["sheet"] = str(contact_sheet(groups if groups is not None else hits, args.sheet, title=title))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.json_out:
        from ..io import atomic_write_bytes

        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.json_out), (text + "\n").encode())
    else:
        sys.stdout.write(text + "\n")
    return result


def search_main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    run_search()
