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
from typing import Any, Mapping, Sequence

log = logging.getLogger("anybind.retrieval")


def load_model(checkpoint: str | None = None, encoders: Mapping[str, str] | None = None, device: str = "cpu"):
    """A checkpoint (``anybind.load``) or, for smoke tests, a random model from registry names."""
    import anybind

    if checkpoint:
        return anybind.load(checkpoint, device=device)
    if encoders:
        return anybind.create_model(dict(encoders)).to(device).eval()
    raise ValueError("give model.checkpoint=<path> (or model.encoders={modality: registry name} for a random model)")


def _plain(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def run_embed(cfg) -> dict:
    """Embed ``cfg.input`` into the store ``cfg.out`` and (``cfg.index.build``) save an index beside it."""
    from .embed import embed_to_store
    from .index import build_index

    c = _plain(cfg)
    m = c.get("model") or {}
    model = load_model(m.get("checkpoint"), m.get("encoders"), m.get("device", "cpu"))
    summary = embed_to_store(model, c["input"], c["out"], modality=c.get("as_modality") or c.get("modality"), modalities=c.get("modalities"),
                             split=c.get("split"), shard_size=c.get("shard_size", 4096), batch_size=c.get("batch_size", 64),
                             num_workers=c.get("num_workers", 0), dtype=c.get("dtype", "float32"),
                             overwrite=c.get("overwrite", False), progress=c.get("progress", True), checkpoint=m.get("checkpoint"),
                             root_only=c.get("root_only", False))
    print(summary.describe())
    result = {"store": str(summary.store.path), "vectors": len(summary.store), "failed": len(summary.store.errors)}
    ix = c.get("index") or {}
    if ix.get("build", True) and len(summary.store):
        index = build_index(summary.store, kind=ix.get("kind", "auto"), memory_budget=ix.get("memory_budget"),
                            threads=ix.get("threads"))
        out = Path(ix.get("out") or Path(c["out"]) / "index")
        index.save(out)
        print(f"index {out}: {index!r} built in {index.info['build_seconds']:.1f} s")
        result["index"] = str(out)
    return result


def run_evaluate(cfg, out_dir: str | Path | None = None) -> dict:
    """``anybind-eval``: see :func:`anybind.eval.cli.run_evaluate` (kept here for existing imports)."""
    from ..eval.cli import run_evaluate as run

    return run(cfg, out_dir)


def _hydra_main(config_name: str, fn):
    import hydra

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its SIMD probing is noise at Hydra's INFO level

    from .config import register_configs

    register_configs()

    @hydra.main(version_base=None, config_path="pkg://conf", config_name=config_name)
    def main(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        from ..errors import AnybindError

        try:
            fn(cfg, HydraConfig.get().runtime.output_dir)
        except AnybindError as exc:  # a damaged checkpoint, a locked store, a bad input: one line, exit 2
            print(f"anybind-{'embed' if config_name == 'embed' else 'eval'}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    main()


def embed_main() -> None:
    _hydra_main("embed", lambda cfg, _: run_embed(cfg))


def eval_main() -> None:
    from ..eval.cli import main

    main()


# ----------------------------------------------------------------------------------------------- search


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anybind-search",
        description="Query an index with files or texts of any modality; several queries combine as a weighted sum.",
        epilog='example: anybind-search --index runs/emb/index --query image:cat.png --query "text:on grass" '
               "--weight 1 --weight 0.5 --target image --target video -k 10 --sheet hits.png")
    p.add_argument("--index", required=True, help="a saved index folder, or an embedding store (indexed in memory)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the one recorded in the index)")
    p.add_argument("--encoders", help="modality=registry_name,... : a random model instead of a checkpoint (tests)")
    p.add_argument("--query", "-q", action="append", required=True,
                   help="MODALITY:VALUE (a path, or the text for text); a bare path infers the modality, other text is text")
    p.add_argument("--weight", "-w", action="append", type=float, help="one per --query (default 1 each)")
    p.add_argument("--target", "-t", action="append", help="restrict results to this modality (repeatable)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", dest="json_out", help="write the results as JSON to this file (default: stdout)")
    p.add_argument("--sheet", help="write a contact-sheet PNG of the results")
    p.add_argument("--device", default="cpu")
    return p


def run_search(argv: Sequence[str] | None = None) -> dict:
    from .index import Index, build_index
    from .search import as_queries, search

    args = search_parser().parse_args(argv)
    path = Path(args.index)
    index = build_index(path, kind="auto") if (path / "store.json").exists() else Index.load(path)
    encoders = dict(kv.split("=", 1) for kv in args.encoders.split(",")) if args.encoders else None
    checkpoint = args.checkpoint or (None if encoders else index.model.get("checkpoint"))
    if not checkpoint and not encoders:
        raise SystemExit("anybind-search: the index records no checkpoint; pass --checkpoint")
    model = load_model(checkpoint, encoders, args.device)
    queries = as_queries(args.query)
    if args.weight and len(args.weight) != len(queries):
        raise SystemExit(f"anybind-search: {len(queries)} --query but {len(args.weight)} --weight; give one per query")
    hits = search(model, index, queries, weights=args.weight, k=args.k, modalities=args.target)
    result = {"queries": [{"modality": m, "value": str(v)} for m, v in queries], "weights": args.weight or [1.0] * len(queries),
              "targets": args.target, "k": args.k, "hits": [h.to_dict() for h in hits]}
    if args.sheet:
        from .search import contact_sheet

        title = " + ".join(f"{w:g} x {m} " + (f'"{v}"' if m == "text" else Path(str(v)).name)
                           for (m, v), w in zip(queries, result["weights"]))
        result["sheet"] = str(contact_sheet(hits, args.sheet, title=title))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return result


def search_main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import AnybindError

    try:
        run_search()
    except AnybindError as exc:
        raise SystemExit(f"anybind-search: {exc}") from None
