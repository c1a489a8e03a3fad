"""The training recipe, top to bottom: config -> model -> data -> loss -> optimizer -> loop -> checkpoint + metrics.

Entry points:

* ``anybind-train key=value ...`` / ``python -m anybind.train.recipe`` / ``torchrun ... -m anybind.train.recipe``:
  :func:`main`, a Hydra app over ``pkg://conf`` (works from any directory and from an installed wheel).
* Python, no command line: ``run(compose_train_config(["data.manifest=m.jsonl", "debug=smoke"]))`` returns a
  :class:`RunResult` (run directory, checkpoint path, metrics).

Each step is a builder of :mod:`anybind.train.builders`; the process around the run (device, process group, run
directory, logs, signals) is :mod:`anybind.train.runtime`'s; the loop is :class:`~anybind.train.trainer.Trainer`.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import Interrupted
from ..io import atomic_write_bytes
from .. import dist
from .builders import (PairSpec, build_data, build_loss, build_model, build_optimization, build_trainer, cache_frozen,
                       frozen_towers, init_towers, load_train_manifest, prepare_module, resolve_pairs, trained_pairs)
from .config import TrainConfig, register_configs, validate_config
from .module import TrainModule
from .runtime import find_resume, lock_named_run_dir, resume_command, seed_everything, training_session

if TYPE_CHECKING:
    from ..model import AnyBindModel
    from .optim import WarmupCosine

# the recipe's own names, and the builders that code written against the recipe imports from here
__all__ = ["RunResult", "Setup", "TrainConfig", "compose_train_config", "build_run", "run", "main", "build_model",
           "resolve_pairs"]

log = logging.getLogger("anybind.train")


@dataclass
class RunResult:
    """What :func:`run` returns."""

    run_dir: Path
    checkpoint_path: Path | None  # checkpoints/last.safetensors: anybind.load() it
    metrics: dict


@dataclass
class Setup:
    """Everything a run is made of, built from a config (no training yet); see :func:`build_run`."""

    model: "AnyBindModel"
    module: TrainModule
    pairs: list[PairSpec]
    frozen: list[str]
    trained_pairs: list[list[str]]  # this run's pairs, then those of init_from's checkpoint
    dataset: Any
    sampler: Any
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: "WarmupCosine"
    max_steps: int


def compose_train_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``conf/train.yaml`` with command-line style ``overrides`` (no Hydra app, no run directory)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        cfg = compose(config_name, overrides=list(overrides))
    else:
        with initialize_config_module("conf", version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
    return validate_config(cfg)  # validated, unselected modality nodes dropped


def build_run(cfg: Any, device: torch.device | str = "cpu") -> Setup:
    """Build model, data, loss, optimizer and schedule from ``cfg`` (used by :func:`run` and by config tests)."""
    from ..data.shards.loader import build_stream_data, is_streamed
    from .tuning import apply_tuning, lr_scales, modality_tuning

    cfg = validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # a missing ??? value fails here, named
    device = torch.device(device)
    rank, world = dist.rank(), dist.world_size()
    frozen = frozen_towers(cfg)
    pairs = resolve_pairs(list(cfg.modality), cfg.anchor, OmegaConf.to_container(cfg.pairs, resolve=True), frozen)
    streamed = is_streamed(cfg.data) or cfg.data.manifest is None  # data=shards (docs/shards.md)
    manifest = None if streamed else load_train_manifest(cfg, pairs)  # before building towers: data problems fail fast

    seed_everything(cfg.trainer.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    prior_pairs = init_towers(cfg, model, frozen)  # init_from, video_from_image
    tuning = modality_tuning(cfg)
    apply_tuning(model, tuning)  # last_n / lora; frozen towers are the train module's

    seed_everything(cfg.trainer.seed + rank)  # distinct dropout / drop-path streams per rank
    dataset, sampler, loader = (build_stream_data(cfg, model, pairs, rank=rank, world=world) if streamed
                                else build_data(cfg, model, pairs, manifest, rank=rank, world=world))
    precomputed = cache_frozen(cfg, model, dataset, pairs, frozen, device, streamed) if cfg.trainer.cache_frozen else []

    module = TrainModule(model, build_loss(cfg, pairs), frozen, precomputed).to(device)
    prepare_module(cfg, module, world)  # grad checkpointing, channels_last, FSDP shards, compile
    optimizer, scheduler, max_steps = build_optimization(cfg, module, lr_scales(tuning), device, len(sampler))
    return Setup(model, module, pairs, frozen, trained_pairs(pairs, prior_pairs), dataset, sampler, loader,
                 optimizer, scheduler, max_steps)


def run(cfg: Any, run_dir: str | Path | None = None) -> RunResult:
    """Train as ``cfg`` says (a composed config, a dict, or a :class:`TrainConfig`); returns a :class:`RunResult`."""
    cfg = validate_config(cfg)
    with training_session(cfg, run_dir) as session:  # device, process group, threads, locked run dir, train.log
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        if session.rank == 0:
            atomic_write_bytes(session.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        s = build_run(cfg, session.device)
        log.info("pairs: %s; frozen: %s; run dir %s", ", ".join(p.name for p in s.pairs), s.frozen or "none",
                 session.run_dir)
        trainer = build_trainer(cfg, s, session.device, session.run_dir, config=resolved)
        resume_from = find_resume(cfg.resume, session.run_dir)
        try:
            metrics = trainer.fit(resume_from)
        except Interrupted as exc:  # a checkpoint was written: say how to go on from it
            raise Interrupted(f"{exc}; resume with:\n  {resume_command(session.run_dir)}", status=exc.status) from None
        return RunResult(session.run_dir, trainer.ckpt.last_model, metrics)


# ----------------------------------------------------------------------------------------------- Hydra app
def _hydra_app():
    import hydra

    @hydra.main(config_path="pkg://conf", config_name="train", version_base="1.3")
    def app(cfg: DictConfig) -> float | None:
        from ..console import user_errors

        with user_errors("anybind-train"):  # one line and exit 2 (anybind.cli), not Hydra's job error report
            result = run(cfg)
        ret = result.metrics.get("retrieval", {}) if result.metrics else {}
        r1 = [v["R@1"] for v in ret.values() if isinstance(v.get("R@1"), float) and not math.isnan(v["R@1"])]
        return sum(r1) / len(r1) if r1 else None  # the value a sweeper would optimize

    return app


def main() -> None:
    """``anybind-train``: the Hydra entry point (single process, multirun sweeps, or one torchrun rank)."""
    register_configs()
    lock_named_run_dir(sys.argv[1:])
    if dist.env_world_size() > 1 and dist.env_rank() > 0:
        # Only rank 0 creates the run directory; this rank gets its path by broadcast once the group is up.
        extra = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
        if not any(a.startswith("hydra.run.dir=") for a in sys.argv[1:]):
            extra.append("hydra.run.dir=.")
        sys.argv += extra
    _hydra_app()()


if __name__ == "__main__":
    main()
