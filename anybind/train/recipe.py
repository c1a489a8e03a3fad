"""The training recipe, top to bottom: config -> model -> data -> loss -> optimizer -> loop -> checkpoint + metrics.

Entry points:

* ``anybind-train key=value ...`` / ``python -m anybind.train.recipe`` / ``torchrun ... -m anybind.train.recipe``:
  :func:`main`, a Hydra app over ``pkg://conf`` (works from any directory and from an installed wheel).
* Python, no command line: ``run(compose_train_config(["data.manifest=m.jsonl", "debug=smoke"]))`` returns a
  :class:`RunResult` (run directory, checkpoint path, metrics).

With torchrun, rank 0 owns the run directory: it alone creates it (other ranks are started with
``hydra.output_subdir=null hydra.run.dir=.`` so Hydra makes nothing for them) and broadcasts its path.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import atomic_write_bytes, load_tensors
from ..errors import AnybindError, CheckpointError, Interrupted
from ..io import WriterLock, clean_temp_files
from . import dist
from .config import TrainConfig, register_configs
from .modality_config import typed_modalities

log = logging.getLogger("anybind.train")


@dataclass
class RunResult:
    run_dir: Path
    checkpoint_path: Path | None  # checkpoints/last.safetensors: anybind.load() it
    metrics: dict


@dataclass
class PairSpec:
    a: str
    b: str
    loss_weight: float = 1.0
    sampling_weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


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
    return _as_config(cfg)  # validated, unselected modality nodes dropped


# ------------------------------------------------------------------------------------------------- helpers
def resolve_pairs(modalities: Sequence[str], anchor: str, pairs: Sequence[Any], frozen: Sequence[str]) -> list[PairSpec]:
    """Explicit ``pairs`` (each with ``modalities: [a, b]`` and weights), or the anchor with every other modality.

    Default pairs whose two towers are both frozen are dropped (nothing would train); explicit ones raise.
    """
    mods = list(modalities)
    specs: list[PairSpec] = []
    if pairs:
        for p in pairs:
            ab = list(p["modalities"])
            if len(ab) != 2 or ab[0] == ab[1]:
                raise ValueError(f"a pair names two different modalities, got {ab}")
            missing = [m for m in ab if m not in mods]
            if missing:
                raise ValueError(f"pair {ab} uses {missing}, which is not trained (modality={mods}); add it to modality=[...]")
            if all(m in frozen for m in ab):
                raise ValueError(f"pair {ab}: both towers are frozen, so nothing of it would train")
            specs.append(PairSpec(ab[0], ab[1], float(p.get("loss_weight", 1.0)), float(p.get("sampling_weight", 1.0))))
    else:
        if anchor not in mods:
            raise ValueError(f"the anchor {anchor!r} is not among the trained modalities {mods}; add it or give pairs=[...]")
        specs = [PairSpec(anchor, m) for m in mods if m != anchor and not (anchor in frozen and m in frozen)]
    if not specs:
        raise ValueError(f"no pair to train among {mods} (frozen: {list(frozen)}); train at least two modalities")
    return specs


def resolve_model_path(path: str | Path) -> Path:
    """A model checkpoint from a file, a checkpoint name (``.../last``), a step directory or a run directory."""
    p = Path(path).expanduser()
    for cand in (p, p.with_suffix(".safetensors"), p / "model.safetensors", p / "checkpoints" / "last.safetensors"):
        if cand.is_file() and cand.suffix == ".safetensors":
            return cand
    raise CheckpointError(f"init_from={str(path)!r}: no anybind checkpoint there (a .safetensors file with its .json "
                          f"sidecar, a step directory, or a run directory with checkpoints/last.safetensors)")


def load_towers(model, path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Load the towers of ``path`` whose modality ``model`` also has; returns (loaded modalities, trained pairs)."""
    path = resolve_model_path(path)
    state, meta = load_tensors(path)
    specs = meta.get("encoders") or {}
    loaded = []
    for m, enc in model.encoders.items():
        if m not in specs:
            continue
        if specs[m].get("name") != getattr(enc, "registry_name", None):
            raise CheckpointError(f"init_from {path}: its {m} tower is {specs[m].get('name')!r} but this run builds "
                                  f"{getattr(enc, 'registry_name', None)!r}; set modality.{m}.encoder to match")
        prefix = f"encoders.{m}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if specs[m].get("lora"):  # a LoRA-tuned tower: load it with its adapters, then merge them (plain weights)
            from ..lora import add_lora, merge_lora

            add_lora(enc, **specs[m]["lora"])
        try:
            enc.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"init_from {path}: the {m} tower does not fit (builder kwargs differ?): {exc}") from exc
        if specs[m].get("lora"):
            merge_lora(enc).requires_grad_(True)
        enc.input_contract = dict(specs[m].get("input_contract") or enc.input_contract)
        loaded.append(m)
    return loaded, [list(p) for p in meta.get("trained_pairs", [])]


def inflate_video_tower(model, loaded: Sequence[str] = ()) -> None:
    """``video_from_image=true``: the video tower starts as the image tower inflated over time (a still clip then
    embeds like its frame), unless ``init_from`` already gave it trained weights."""
    from encoders.video import inflate_image_stem

    if "video" not in model.encoders:
        return  # nothing to initialise (an experiment that sets it may be run with modality=[...] without video)
    if "image" not in model.encoders:
        raise ValueError(f"video_from_image=true needs an image tower to inflate (modality={model.modalities})")
    if "video" in loaded:
        log.info("video_from_image: the video tower came from init_from; not inflating the image tower over it")
        return
    try:
        inflate_image_stem(model.encoders["video"], model.encoders["image"])
    except ValueError as exc:
        raise ValueError(f"video_from_image=true: {exc}") from exc
    log.info("video tower initialised from the %s image tower", "loaded" if "image" in loaded else "fresh")


def _pretrained(kwargs) -> bool:
    """A tower built from pretrained weights (``pretrained=`` file or ``path=`` folder) may be frozen without init_from."""
    return bool(kwargs.get("pretrained") or kwargs.get("path"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """-> (autocast dtype or None for fp32, whether a GradScaler is needed)."""
    if name == "auto":
        name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    table = {"fp32": (None, False), "32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}
    if name not in table:
        raise ValueError(f"trainer.precision must be auto, fp32, bf16 or fp16, got {name!r}")
    return table[name]


def default_threads(device: torch.device, data_workers: int) -> int:
    """torch threads per process: this node's cores shared among its processes, minus the data workers on CPU.

    Oversubscribed cores hurt small models badly (threads spin waiting for each other), so on CPU every busy
    DataLoader worker takes one core away from the training threads.
    """
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return cores if device.type == "cuda" else max(1, cores - data_workers)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _as_config(cfg: Any) -> DictConfig:
    """Validate any config (DictConfig, dict or TrainConfig) against the schema.

    Hydra already checks every key while composing, except keys added with ``+key=value`` (Hydra opens the
    struct for those); merging into a fresh schema catches them too, naming the key.
    """
    if isinstance(cfg, DictConfig):  # a plain copy: merging two typed configs would carry the extra keys over
        cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg = typed_modalities(OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg))
    for m in list(cfg.modality):
        # An experiment may give kwargs for a modality that this run does not select (experiment=world
        # modality=[image,audio] leaves video.kwargs behind): such a node has no encoder and is not trained.
        if OmegaConf.is_missing(cfg.modality[m], "encoder"):
            log.info("modality.%s has settings but is not selected (modality=[...]); it is not trained", m)
            del cfg.modality[m]
    return cfg


def _run_dir(cfg: DictConfig, run_dir: str | Path | None) -> Path:
    if dist.is_main():
        if run_dir is None and cfg.out_dir:
            run_dir = cfg.out_dir
        if run_dir is None:
            try:
                from hydra.core.hydra_config import HydraConfig

                run_dir = HydraConfig.get().runtime.output_dir
            except ValueError:  # not inside a Hydra app
                run_dir = Path("runs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
    return Path(dist.broadcast_object(str(run_dir) if run_dir is not None else None))


# ---------------------------------------------------------------------------------------------------- build
def build_model(cfg: DictConfig):
    from ..model import create_model

    cfg = _as_config(cfg)
    specs = {m: {"name": c.encoder, **OmegaConf.to_container(c.kwargs, resolve=True)} for m, c in cfg.modality.items()}
    if not specs:
        raise ValueError("no modality selected: use modality=[image,text,...]")
    return create_model(specs, embed_dim=cfg.embed_dim)


def load_train_manifest(cfg: DictConfig, pairs: list[PairSpec]):
    """The training split of ``data.manifest``; raises when a trained pair has no sample with both modalities."""
    from ..data.manifest import load_manifest

    d = cfg.data
    manifest = load_manifest(d.manifest, root_only=d.root_only).select(d.train_split, limit=d.max_samples)
    empty = [p.name for p in pairs if not manifest.indices_with(p.a, p.b)]
    if empty:
        raise ValueError(f"{d.manifest}: no sample has both modalities of {empty} (samples per modality: "
                         f"{manifest.counts()}); drop those modalities or add data")
    return manifest


def build_data(cfg: DictConfig, model, pairs: list[PairSpec], manifest, *, rank: int, world: int):
    """Training manifest -> dataset -> batch sampler -> DataLoader."""
    from torch.utils.data import DataLoader

    from ..data.dataset import ManifestDataset, worker_init
    from ..data.sampling import MixedBatchSampler, PairBatchSampler

    d = cfg.data
    counts = manifest.counts()
    pools = {p.name: ((p.a, p.b), manifest.indices_with(p.a, p.b)) for p in pairs}
    used = [m for m in model.modalities if any(m in (p.a, p.b) for p in pairs)]
    dataset = ManifestDataset(manifest, {m: model.input_contract(m) for m in used}, skip_errors=d.skip_errors)
    common = dict(seed=cfg.trainer.seed, rank=rank, world_size=world)
    if d.batching == "mixed":
        rows = []
        for s in manifest:
            have = {m for p in pairs if p.a in s.items and p.b in s.items for m in (p.a, p.b)}
            rows.append(tuple(m for m in used if m in have))
        sampler = MixedBatchSampler(rows, used, d.batch_size, **common)
    elif d.batching == "pair":
        sampler = PairBatchSampler(pools, {p.name: p.sampling_weight for p in pairs}, d.batch_size,
                                   steps_per_epoch=d.steps_per_epoch, **common)
    else:
        raise ValueError(f"data.batching must be 'mixed' or 'pair', got {d.batching!r}")
    augment = {m: OmegaConf.to_container(cfg.modality[m].augment) for m in used if cfg.modality[m].augment}
    if augment:  # seeded per (epoch, sample): docs/shards.md, "Augmentations"
        from ..data.augmented import augment_manifest_data

        dataset, sampler = augment_manifest_data(dataset, sampler, augment, cfg.trainer.seed)
    workers = d.num_workers
    if d.preload:
        failed = dataset.preload(num_workers=workers, progress=cfg.trainer.progress and rank == 0)
        log.info("preloaded %d tensors (%d failed)", len(dataset._cache or {}), failed)
        workers = 0  # every tensor is in memory: collation is all that is left
    pin = d.pin_memory if d.pin_memory is not None else torch.cuda.is_available() and cfg.trainer.device != "cpu"
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=dataset.collate, num_workers=workers, pin_memory=pin,
        persistent_workers=bool(workers and d.persistent_workers), prefetch_factor=d.prefetch_factor if workers else None,
        worker_init_fn=worker_init if workers else None, generator=torch.Generator().manual_seed(cfg.trainer.seed),
    )
    log.info("data: %d samples (%s), %s batching, %d batches of %d per epoch per rank", len(manifest), counts,
             d.batching, len(sampler), d.batch_size)
    return dataset, sampler, loader


def build_loss(cfg: DictConfig, pairs: list[PairSpec]):
    from ..losses import ContrastiveLoss

    c = cfg.loss
    return ContrastiveLoss([(p.a, p.b) for p in pairs], kind=c.kind, weights={p.name: p.loss_weight for p in pairs},
                           init_temperature=c.init_temperature, max_logit_scale=c.max_logit_scale,
                           learn_temperature=c.learn_temperature, shared_temperature=c.shared_temperature,
                           init_bias=c.init_bias)


# ------------------------------------------------------------------------------------------------------ run
def run(cfg: Any, run_dir: str | Path | None = None) -> RunResult:
    """Train as ``cfg`` says (a composed config, a dict, or a :class:`TrainConfig`); returns a :class:`RunResult`."""
    cfg = _as_config(cfg)
    device = resolve_device(cfg.trainer.device)
    started = dist.init_distributed(device.type) and dist.world_size() > 1
    try:
        return _run(cfg, device, run_dir)
    finally:
        if started:
            dist.cleanup()


@dataclass
class Setup:
    """Everything a run is made of, built from a config (no training yet); see :func:`build_run`."""

    model: Any
    module: Any
    pairs: list[PairSpec]
    frozen: list[str]
    trained_pairs: list[list[str]]
    dataset: Any
    sampler: Any
    loader: Any
    optimizer: Any
    scheduler: Any
    max_steps: int


def build_run(cfg: Any, device: torch.device | str = "cpu") -> Setup:
    """Build model, data, loss, optimizer and schedule from ``cfg`` (used by :func:`run` and by config tests)."""
    from ..data.shards.loader import build_stream_data, is_streamed
    from .optim import WarmupCosine, build_optimizer
    from .trainer import TrainModule, shard_towers
    from .tuning import apply_tuning, frozen_modalities, lr_scales, modality_tuning

    cfg = _as_config(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # a missing ??? value fails here, named
    device = torch.device(device)
    t, o = cfg.trainer, cfg.optim
    rank, world = dist.rank(), dist.world_size()
    frozen = frozen_modalities(cfg)  # freeze=[...] plus modality.<m>.tune.mode=frozen
    unknown = [m for m in frozen if m not in cfg.modality]
    if unknown:
        raise ValueError(f"freeze={frozen} names {unknown}, which is not trained (modality={list(cfg.modality)})")
    if [m for m in frozen if not _pretrained(cfg.modality[m].kwargs)] and not cfg.init_from:
        raise ValueError(f"freeze={frozen} without init_from: the frozen towers would stay random. Give "
                         f"init_from=<checkpoint, step directory or run directory> (e.g. the anchor stage's run)")
    pairs = resolve_pairs(list(cfg.modality), cfg.anchor, OmegaConf.to_container(cfg.pairs, resolve=True), frozen)
    streamed = is_streamed(cfg.data) or cfg.data.manifest is None  # data=shards (docs/shards.md)
    manifest = None if streamed else load_train_manifest(cfg, pairs)  # before building towers: data problems fail fast
    seed_everything(t.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    prior_pairs: list[list[str]] = []
    loaded: list[str] = []
    if cfg.init_from:
        loaded, prior_pairs = load_towers(model, cfg.init_from)
        log.info("init_from %s: loaded towers %s", cfg.init_from, loaded)
    if cfg.video_from_image:
        inflate_video_tower(model, loaded)
    for m in frozen:
        if m not in loaded and not _pretrained(cfg.modality[m].kwargs):
            log.warning("freezing the %s tower although it was not loaded from init_from: it stays random", m)
    tuning = modality_tuning(cfg)
    apply_tuning(model, tuning)  # last_n / lora; frozen towers are the train module's
    seed_everything(t.seed + rank)  # distinct dropout / drop-path streams per rank
    dataset, sampler, loader = (build_stream_data(cfg, model, pairs, rank=rank, world=world) if streamed
                                else build_data(cfg, model, pairs, manifest, rank=rank, world=world))
    precomputed = _cache_frozen(cfg, model, dataset, pairs, frozen, device, streamed) if t.cache_frozen else []
    module = TrainModule(model, build_loss(cfg, pairs), frozen, precomputed).to(device)
    if t.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if t.channels_last:
        from .memory_format import conv_kernels_channels_last

        conv_kernels_channels_last(model)
    if t.strategy == "fsdp" and world > 1:
        shard_towers(module)
    elif t.strategy not in ("ddp", "fsdp"):
        raise ValueError(f"trainer.strategy must be 'ddp' or 'fsdp', got {t.strategy!r}")
    if t.compile:
        for enc in model.encoders.values():
            enc.compile(dynamic=True)
    optimizer = build_optimizer(module, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                                fused=device.type in ("cuda", "cpu"), lr_scales=lr_scales(tuning))
    max_steps = t.max_steps
    if t.max_epochs:
        max_steps = math.ceil(t.max_epochs * len(sampler) / max(1, t.grad_accum * t.accum_steps))
    scheduler = WarmupCosine(optimizer, total_steps=max_steps, warmup_steps=o.warmup_steps, min_ratio=o.min_lr_ratio,
                             schedule=o.schedule)
    this = {frozenset((p.a, p.b)) for p in pairs}
    trained = [[p.a, p.b] for p in pairs] + [p for p in prior_pairs if frozenset(p) not in this]
    return Setup(model, module, pairs, frozen, trained, dataset, sampler, loader, optimizer, scheduler, max_steps)


def _cache_frozen(cfg, model, dataset, pairs: list[PairSpec], frozen: list[str], device, streamed: bool) -> list[str]:
    """``trainer.cache_frozen``: the frozen towers' embeddings of the preloaded inputs, computed once."""
    from .frozen_cache import cache_frozen_towers, check_cacheable

    used = [m for m in model.modalities if any(m in (p.a, p.b) for p in pairs)]
    check_cacheable([m for m in used if m in frozen], preload=cfg.data.preload, streamed=streamed,
                    augmented=[m for m in used if cfg.modality[m].augment])
    return cache_frozen_towers(model, dataset, frozen, used, device=device,
                               autocast_dtype=resolve_precision(cfg.trainer.precision, device)[0])


def _run(cfg: DictConfig, device: torch.device, run_dir: str | Path | None) -> RunResult:
    from ..evaluate import evaluate_model
    from .trainer import Trainer

    t, e = cfg.trainer, cfg.eval
    rank = dist.rank()
    torch.set_num_threads(t.num_threads or default_threads(device, 0 if cfg.data.preload else cfg.data.num_workers))
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = _run_dir(cfg, run_dir)
    # One training run per run directory: rank 0 holds its lock (an OS lock that dies with the process), so a
    # second anybind-train into the same directory fails at once, naming the holder's PID.
    early = _EARLY_LOCKS.get(run_dir.resolve()) if rank == 0 else None  # taken by main() before Hydra wrote there
    lock = None
    if rank == 0 and early is None:
        lock = WriterLock(run_dir, "training run directory").acquire()
    if rank == 0:
        clean_temp_files(run_dir)  # what a killed run left half-written (config.yaml, metrics.json temp files)
    handler = _attach_log_file(run_dir) if rank == 0 else None
    if rank != 0:
        logging.getLogger("anybind").setLevel(logging.WARNING)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        if rank == 0:
            atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        s = build_run(cfg, device)
        log.info("pairs: %s; frozen: %s; run dir %s", ", ".join(p.name for p in s.pairs), s.frozen or "none", run_dir)
        autocast_dtype, use_scaler = resolve_precision(t.precision, device)

        def evaluate() -> dict:
            return evaluate_model(
                s.model, e.manifest or cfg.data.val_manifest or cfg.data.manifest,
                trained_pairs={frozenset(p) for p in s.trained_pairs},
                split=e.split, limit=e.max_samples, batch_size=e.batch_size, num_workers=e.num_workers,
                match_key=e.match_key, zero_shot=e.zero_shot, prompt=e.prompt, dataset_name=cfg.data.name)

        trainer = Trainer(
            module=s.module, optimizer=s.optimizer, scheduler=s.scheduler, loader=s.loader, sampler=s.sampler,
            device=device, run_dir=run_dir, max_steps=s.max_steps, grad_accum=t.grad_accum, accum_steps=t.accum_steps,
            autocast_dtype=autocast_dtype, use_scaler=use_scaler, clip_grad_norm=cfg.optim.clip_grad_norm,
            strategy=t.strategy, log_every=t.log_every, eval_every=t.eval_every, ckpt_every=t.ckpt_every,
            keep_last=t.keep_last, progress=t.progress, tensorboard=t.tensorboard, csv_log=t.csv, heatmap=e.heatmap,
            evaluate=evaluate if e.enabled else None, eval_on_all_ranks=t.strategy == "fsdp", config=resolved,
            checkpoint_meta={"trained_pairs": s.trained_pairs, "frozen": s.frozen},
        )
        resume_from = None
        if cfg.resume:
            from .checkpointing import find_resume_checkpoint

            resume_from = dist.broadcast_object(find_resume_checkpoint(cfg.resume, run_dir) if rank == 0 else None)
            if resume_from is not None:
                log.info("resume=%s: continuing from %s", cfg.resume, resume_from)
            else:  # only "latest" may find nothing; it never looks at other runs
                log.info("resume=latest: %s has no checkpoint yet; starting from step 0 (resume=latest only "
                         "continues this run directory; give resume=<run or step directory> to continue another)",
                         run_dir / "checkpoints")
        try:
            metrics = trainer.fit(resume_from)
        except Interrupted as exc:  # a checkpoint was written: say how to go on from it
            raise Interrupted(f"{exc}; resume with:\n  {resume_command(run_dir)}", status=exc.status) from None
        return RunResult(run_dir, trainer.ckpt.last_model, metrics)
    finally:
        if handler is not None:
            logging.getLogger("anybind").removeHandler(handler)
            handler.close()
        if lock is not None:
            lock.release()


def resume_command(run_dir: Path, argv: Sequence[str] | None = None) -> str:
    """This run's command line with ``resume=<run_dir>`` (replacing any ``resume=`` it had)."""
    import shlex

    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.lstrip("+~").startswith("resume=")]
    return " ".join(["anybind-train", *(shlex.quote(a) for a in args), shlex.quote(f"resume={run_dir}")])


def _attach_log_file(run_dir: Path) -> logging.Handler | None:
    """Outside Hydra (which configures its own job log), keep a ``train.log`` in the run directory."""
    try:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.get()
        return None
    except ValueError:
        pass
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    lg = logging.getLogger("anybind")
    lg.addHandler(handler)
    if lg.level == logging.NOTSET or lg.level > logging.INFO:
        lg.setLevel(logging.INFO)
    return handler


# ----------------------------------------------------------------------------------------------- Hydra app
def _hydra_app():
    import hydra

    @hydra.main(config_path="pkg://conf", config_name="train", version_base="1.3")
    def app(cfg: DictConfig) -> float | None:
        from ..cli import user_errors

        with user_errors("anybind-train"):  # one line and exit 2 (anybind.cli), not Hydra's job error report
            result = run(cfg)
        ret = result.metrics.get("retrieval", {}) if result.metrics else {}
        r1 = [v["R@1"] for v in ret.values() if isinstance(v.get("R@1"), float) and not math.isnan(v["R@1"])]
        return sum(r1) / len(r1) if r1 else None  # the value a sweeper would optimize

    return app


_EARLY_LOCKS: dict[Path, WriterLock] = {}


def _lock_named_run_dir(argv: Sequence[str]) -> None:
    """An explicit ``hydra.run.dir=DIR`` is locked before Hydra writes its ``.hydra/`` files there, so a second
    anybind-train into a directory that a running one holds changes nothing in it."""
    dirs = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not dirs or "${" in dirs[-1] or any(a in ("-m", "--multirun") for a in argv) or dist.env_rank() > 0:
        return
    run_dir = Path(dirs[-1]).expanduser().resolve()
    try:
        _EARLY_LOCKS[run_dir] = WriterLock(run_dir, "training run directory").acquire()
    except AnybindError as exc:
        print(f"anybind-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """``anybind-train``: the Hydra entry point (single process, multirun sweeps, or one torchrun rank)."""
    register_configs()
    _lock_named_run_dir(sys.argv[1:])
    if dist.env_world_size() > 1 and dist.env_rank() > 0:
        # Only rank 0 creates the run directory; this rank gets its path by broadcast once the group is up.
        extra = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
        if not any(a.startswith("hydra.run.dir=") for a in sys.argv[1:]):
            extra.append("hydra.run.dir=.")
        sys.argv += extra
    _hydra_app()()


if __name__ == "__main__":
    main()
