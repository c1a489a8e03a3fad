"""The recipe's builders: each turns a part of a training config into plain objects (towers, pairs, data, loss,
optimizer and schedule, trainer). The objects they build never see the config.

:func:`anybind.train.recipe.build_run` calls them in order; each may also be called on its own (the benchmarks
build a model and a loss this way).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import load_tensors
from ..errors import CheckpointError
from .config import validate_config

if TYPE_CHECKING:
    from ..data.manifest import Manifest
    from ..losses import ContrastiveLoss
    from ..model import AnyBindModel
    from .module import TrainModule
    from .optim import WarmupCosine
    from .trainer import Trainer

log = logging.getLogger("anybind.train")


# ------------------------------------------------------------------------------------------ pairs and freezing
@dataclass
class PairSpec:
    """A trained pair of modalities with its loss weight and its share of steps (``data.batching=pair``)."""

    a: str
    b: str
    loss_weight: float = 1.0
    sampling_weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


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


def trained_pairs(pairs: Sequence[PairSpec], prior: Sequence[Sequence[str]]) -> list[list[str]]:
    """This run's pairs, then the pairs ``init_from``'s checkpoint was trained on (the checkpoint records both)."""
    this = {frozenset((p.a, p.b)) for p in pairs}
    return [[p.a, p.b] for p in pairs] + [list(p) for p in prior if frozenset(p) not in this]


def _pretrained(kwargs: Any) -> bool:
    """A tower built from pretrained weights (``pretrained=`` file or ``path=`` folder) may be frozen without init_from."""
    return bool(kwargs.get("pretrained") or kwargs.get("path"))


def frozen_towers(cfg: DictConfig) -> list[str]:
    """``freeze=[...]`` plus ``modality.<m>.tune.mode=frozen``; refuses a frozen tower that would stay random."""
    from .tuning import frozen_modalities

    frozen = frozen_modalities(cfg)
    unknown = [m for m in frozen if m not in cfg.modality]
    if unknown:
        raise ValueError(f"freeze={frozen} names {unknown}, which is not trained (modality={list(cfg.modality)})")
    if [m for m in frozen if not _pretrained(cfg.modality[m].kwargs)] and not cfg.init_from:
        raise ValueError(f"freeze={frozen} without init_from: the frozen towers would stay random. Give "
                         f"init_from=<checkpoint, step directory or run directory> (e.g. the anchor stage's run)")
    return frozen


# ------------------------------------------------------------------------------------------------------ towers
def build_model(cfg: Any) -> "AnyBindModel":
    """The towers of ``modality.<m>`` (registry encoder + builder kwargs), projecting to ``embed_dim``."""
    from ..model import create_model

    cfg = validate_config(cfg)
    specs = {m: {"name": c.encoder, **OmegaConf.to_container(c.kwargs, resolve=True)} for m, c in cfg.modality.items()}
    if not specs:
        raise ValueError("no modality selected: use modality=[image,text,...]")
    return create_model(specs, embed_dim=cfg.embed_dim)


def resolve_model_path(path: str | Path) -> Path:
    """A model checkpoint from a file, a checkpoint name (``.../last``), a step directory or a run directory."""
    p = Path(path).expanduser()
    for cand in (p, p.with_suffix(".safetensors"), p / "model.safetensors", p / "checkpoints" / "last.safetensors"):
        if cand.is_file() and cand.suffix == ".safetensors":
            return cand
    raise CheckpointError(f"init_from={str(path)!r}: no anybind checkpoint there (a .safetensors file with its .json "
                          f"sidecar, a step directory, or a run directory with checkpoints/last.safetensors)")


def load_towers(model: "AnyBindModel", path: str | Path) -> tuple[list[str], list[list[str]]]:
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


def inflate_video_tower(model: "AnyBindModel", loaded: Sequence[str] = ()) -> None:
    """``video_from_image=true``: the video tower starts as the image tower inflated over time (a still clip then
    embeds like its frame), unless ``init_from`` already gave it trained weights."""
    from ..layers.stems import inflate_image_stem

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


def init_towers(cfg: DictConfig, model: "AnyBindModel", frozen: Sequence[str]) -> list[list[str]]:
    """``init_from`` and ``video_from_image``; returns the pairs the loaded checkpoint was trained on."""
    loaded: list[str] = []
    prior: list[list[str]] = []
    if cfg.init_from:
        loaded, prior = load_towers(model, cfg.init_from)
        log.info("init_from %s: loaded towers %s", cfg.init_from, loaded)
    if cfg.video_from_image:
        inflate_video_tower(model, loaded)
    for m in frozen:
        if m not in loaded and not _pretrained(cfg.modality[m].kwargs):
            log.warning("freezing the %s tower although it was not loaded from init_from: it stays random", m)
    return prior


def prepare_module(cfg: DictConfig, module: "TrainModule", world: int) -> None:
    """Gradient checkpointing, channels-last conv kernels, FSDP sharding and ``torch.compile``, as ``trainer`` says."""
    t = cfg.trainer
    model = module.model
    if t.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if t.channels_last:
        from .memory_format import channels_last_towers

        channels_last_towers(model, t.channels_last)
    if t.strategy == "fsdp" and world > 1:
        from .parallel import shard_towers

        shard_towers(module)
    elif t.strategy not in ("ddp", "fsdp"):
        raise ValueError(f"trainer.strategy must be 'ddp' or 'fsdp', got {t.strategy!r}")
    if t.compile:
        for enc in model.encoders.values():
            enc.compile(dynamic=True)


# -------------------------------------------------------------------------------------------------------- data
def load_train_manifest(cfg: DictConfig, pairs: list[PairSpec]) -> "Manifest":
    """The training split of ``data.manifest``; raises when a trained pair has no sample with both modalities."""
    from ..data.manifest import load_manifest

    d = cfg.data
    manifest = load_manifest(d.manifest, root_only=d.root_only).select(d.train_split, limit=d.max_samples)
    empty = [p.name for p in pairs if not manifest.indices_with(p.a, p.b)]
    if empty:
        raise ValueError(f"{d.manifest}: no sample has both modalities of {empty} (samples per modality: "
                         f"{manifest.counts()}); drop those modalities or add data")
    return manifest


def build_data(cfg: DictConfig, model: "AnyBindModel", pairs: list[PairSpec], manifest: "Manifest", *, rank: int,
               world: int) -> tuple[Any, Any, torch.utils.data.DataLoader]:
    """Training manifest -> dataset -> batch sampler -> DataLoader; returns ``(dataset, sampler, loader)``."""
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
        log.info("preloaded %d tensors (%d failed)", len(dataset.cache or {}), failed)
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


def cache_frozen(cfg: DictConfig, model: "AnyBindModel", dataset: Any, pairs: list[PairSpec], frozen: list[str],
                 device: torch.device, streamed: bool) -> list[str]:
    """``trainer.cache_frozen``: the frozen towers' embeddings of the preloaded inputs, computed once; returns the
    modalities whose batches now carry embeddings."""
    from .frozen_cache import cache_frozen_towers, check_cacheable
    from .runtime import resolve_precision

    used = [m for m in model.modalities if any(m in (p.a, p.b) for p in pairs)]
    check_cacheable([m for m in used if m in frozen], preload=cfg.data.preload, streamed=streamed,
                    augmented=[m for m in used if cfg.modality[m].augment])
    return cache_frozen_towers(model, dataset, frozen, used, device=device,
                               autocast_dtype=resolve_precision(cfg.trainer.precision, device)[0])


# ------------------------------------------------------------------------------------ loss, optimizer, trainer
def build_loss(cfg: DictConfig, pairs: list[PairSpec]) -> "ContrastiveLoss":
    """The contrastive loss of ``loss`` over the pairs, each with its ``loss_weight``."""
    from ..losses import ContrastiveLoss

    c = cfg.loss
    return ContrastiveLoss([(p.a, p.b) for p in pairs], kind=c.kind, weights={p.name: p.loss_weight for p in pairs},
                           init_temperature=c.init_temperature, max_logit_scale=c.max_logit_scale,
                           learn_temperature=c.learn_temperature, shared_temperature=c.shared_temperature,
                           init_bias=c.init_bias)


def build_optimization(cfg: DictConfig, module: "TrainModule", lr_scales: dict[str, float], device: torch.device,
                       batches_per_epoch: int) -> tuple[torch.optim.Optimizer, "WarmupCosine", int]:
    """AdamW over the trainable parameters (per-tower ``lr_scale`` groups) and its warmup + cosine schedule;
    returns ``(optimizer, scheduler, max_steps)`` (``trainer.max_epochs`` sets the steps when given)."""
    from .optim import WarmupCosine, build_optimizer

    t, o = cfg.trainer, cfg.optim
    optimizer = build_optimizer(module, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                                fused=device.type in ("cuda", "cpu"), lr_scales=lr_scales)
    max_steps = t.max_steps
    if t.max_epochs:
        max_steps = math.ceil(t.max_epochs * batches_per_epoch / max(1, t.grad_accum * t.accum_steps))
    scheduler = WarmupCosine(optimizer, total_steps=max_steps, warmup_steps=o.warmup_steps, min_ratio=o.min_lr_ratio,
                             schedule=o.schedule)
    return optimizer, scheduler, max_steps


def build_evaluate(cfg: DictConfig, model: "AnyBindModel", trained: list[list[str]]) -> Callable[[], dict] | None:
    """The evaluation the trainer runs (``eval``), or None with ``eval.enabled=false``."""
    from ..evaluate import evaluate_model

    e = cfg.eval
    if not e.enabled:
        return None
    return lambda: evaluate_model(
        model, e.manifest or cfg.data.val_manifest or cfg.data.manifest, trained_pairs={frozenset(p) for p in trained},
        split=e.split, limit=e.max_samples, batch_size=e.batch_size, num_workers=e.num_workers,
        match_key=e.match_key, zero_shot=e.zero_shot, prompt=e.prompt, dataset_name=cfg.data.name)


def build_trainer(cfg: DictConfig, setup: Any, device: torch.device, run_dir: Path, config: dict) -> "Trainer":
    """The :class:`~anybind.train.trainer.Trainer` of a built run (``setup``: :func:`~anybind.train.recipe.build_run`'s)
    with ``trainer``'s intervals and precision; ``config`` (the resolved config) goes into every checkpoint."""
    from .runtime import resolve_precision
    from .trainer import Trainer

    t = cfg.trainer
    autocast_dtype, use_scaler = resolve_precision(t.precision, device)
    return Trainer(
        module=setup.module, optimizer=setup.optimizer, scheduler=setup.scheduler, loader=setup.loader,
        sampler=setup.sampler, device=device, run_dir=run_dir, max_steps=setup.max_steps, grad_accum=t.grad_accum,
        accum_steps=t.accum_steps, autocast_dtype=autocast_dtype, use_scaler=use_scaler,
        clip_grad_norm=cfg.optim.clip_grad_norm, strategy=t.strategy, log_every=t.log_every,
        eval_every=t.eval_every, ckpt_every=t.ckpt_every, keep_last=t.keep_last, progress=t.progress,
        tensorboard=t.tensorboard, csv_log=t.csv, heatmap=cfg.eval.heatmap,
        evaluate=build_evaluate(cfg, setup.model, setup.trained_pairs), eval_on_all_ranks=t.strategy == "fsdp",
        config=config, checkpoint_meta={"trained_pairs": setup.trained_pairs, "frozen": setup.frozen})
