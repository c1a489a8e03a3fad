"""The retrieval jobs the command lines run: ``run_embed(cfg)`` (``anybind-embed`` on a composed config, callable
from tests and notebooks), the model loader they share, and :func:`hydra_main`, which runs a job on a config composed
from the command line. The command lines themselves are in :mod:`anybind.retrieval.cli`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger("anybind.retrieval")


def load_model(checkpoint: str | None = None, encoders: Mapping[str, str] | None = None, device: str = "cpu",
               modalities: Sequence[str] | None = None):
    """A checkpoint (``anybind.load``; ``modalities``: only those towers) or, for smoke tests, a random model from
    registry names."""
    import anybind

    if checkpoint:
        return anybind.load(checkpoint, device=device, modalities=None if modalities is None else list(modalities))
    if encoders:
        return anybind.create_model(dict(encoders)).to(device).eval()
    raise ValueError("give model.checkpoint=<path> (or model.encoders={modality: registry name} for a random model)")


def resume_command(argv: Sequence[str] | None = None, prog: str = "anybind-embed") -> str:
    """The command line that resumes this run: the same arguments, without ``overwrite=true`` (which would start over)."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    keep = [a for a in args if not a.lower().lstrip("+~").startswith("overwrite=")]
    return " ".join([prog, *(shlex.quote(a) for a in keep)])


def _raise_on_sigterm():
    """Turn SIGTERM into :class:`Interrupted` (status 143) in the main thread, as Ctrl-C is a KeyboardInterrupt;
    returns the handler it replaced (``None`` outside the main thread, where nothing is installed)."""
    import signal
    import threading

    from ..errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum, frame):
        raise Interrupted("terminated (SIGTERM)", status=143)

    return signal.signal(signal.SIGTERM, on_term)


def run_embed(cfg) -> dict:
    """Embed ``cfg.input`` into the store ``cfg.out`` and (``cfg.index.build``) save an index beside it.

    Ctrl-C or SIGTERM stops after writing what the current shard has: the summary is printed and
    :class:`anybind.errors.Interrupted` raised with the command that resumes.
    """
    import signal

    from ..errors import Interrupted
    from .config import to_plain
    from .embed import embed_to_store
    from .index import build_index

    c = to_plain(cfg)
    m = c.get("model") or {}
    model = load_model(m.get("checkpoint"), m.get("encoders"), m.get("device", "cpu"))
    previous = _raise_on_sigterm()
    try:
        summary = embed_to_store(
            model, c["input"], c["out"], modality=c.get("as_modality") or c.get("modality"),
            modalities=c.get("modalities"), split=c.get("split"), shard_size=c.get("shard_size", 4096),
            batch_size=c.get("batch_size", 64), num_workers=c.get("num_workers", "auto"),
            dtype=c.get("dtype", "float32"), overwrite=c.get("overwrite", False), progress=c.get("progress", True),
            checkpoint=m.get("checkpoint"), root_only=c.get("root_only", False),
            flush_seconds=c.get("flush_seconds", 30.0), text_sidecars=c.get("text_sidecars", False),
            precision=c.get("precision", "auto"))
    except Interrupted as exc:
        if exc.summary is None:
            raise
        s = exc.summary
        print(s.describe(), flush=True)
        left = s.planned - s.done
        word = "terminated (SIGTERM)" if exc.status == 143 else "interrupted"
        raise Interrupted(f"{word}: {s.done} of {s.planned} inputs are done and kept in {s.store.path} "
                          f"({s.embedded + s.failed} by this run); {left} left, no index built yet. Resume with:\n  "
                          f"{resume_command()}", status=exc.status, summary=s) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
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


def hydra_main(config_name: str, fn, prog: str | None = None) -> None:
    """Run ``fn(cfg, run_dir)`` on the config ``conf/<config_name>.yaml`` composed from the command line; a user
    error prints one line (``prog: message``) and exits 2."""
    import hydra

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its SIMD probing is noise at Hydra's INFO level

    from .config import register_configs

    register_configs()

    @hydra.main(version_base=None, config_path="pkg://conf", config_name=config_name)
    def main(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        from ..console import user_errors

        with user_errors(prog):  # one line and exit 2, before Hydra adds its own "Error executing job" line
            fn(cfg, HydraConfig.get().runtime.output_dir)

    main()
