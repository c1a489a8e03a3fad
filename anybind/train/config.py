"""Structured configs of a training run, registered in Hydra's ConfigStore.

``conf/train.yaml`` starts its defaults list with ``train_schema`` (:class:`TrainConfig`), so every group file and
every command-line override is checked against these dataclasses when the config is composed: a misspelled key
(``trainer.max_step=10``) fails before any work starts, naming the key. The ``modality.<m>`` nodes are checked
against :class:`ModalityConfig` right after composing (:func:`typed_modalities`), so that
``+modality.<m>.encoder=<name>`` can add one. Only the recipe reads these objects; everything it builds takes plain
arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger("anybind.train")


@dataclass
class LoraConfig:
    """LoRA adapters (``tune.mode=lora``); ``targets`` null: the attention and MLP Linear layers of the blocks."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Optional[list[str]] = None


@dataclass
class TuneConfig:
    """Which weights of a tower train (see :mod:`anybind.train.tuning`)."""

    mode: str = "full"  # full | frozen | last_n | lora
    last_n: int = 0  # mode=last_n: how many final blocks train
    lr_scale: float = 1.0  # multiplies optim.lr for this tower
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class ModalityConfig:
    """One trained modality: the registry encoder, its builder keyword arguments and how it is tuned."""

    encoder: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    tune: TuneConfig = field(default_factory=TuneConfig)
    augment: dict[str, Any] = field(default_factory=dict)  # training augmentations (anybind/data/augment.py); off


@dataclass
class PairConfig:
    """A pair trained together; ``loss_weight`` scales its loss, ``sampling_weight`` its share of steps
    (``data.batching=pair``)."""

    modalities: list[str] = MISSING
    loss_weight: float = 1.0
    sampling_weight: float = 1.0


@dataclass
class DataConfig:
    name: str = "data"  # names zero-shot results: "<name>/<modality>"
    manifest: Optional[str] = MISSING  # JSONL or CSV (ARCHITECTURE contract 4); null with shards / mixture
    train_split: Optional[str] = "train"  # ignored when no sample declares a split
    val_manifest: Optional[str] = None  # evaluation data (default: manifest, split eval.split)
    batching: str = "mixed"  # mixed | pair (see anybind.data.sampling)
    batch_size: int = 32  # per rank
    steps_per_epoch: Optional[int] = None  # pair batching; default: data size / global batch
    num_workers: int = 2
    persistent_workers: bool = True
    prefetch_factor: int = 2
    pin_memory: Optional[bool] = None  # default: on when training on CUDA
    preload: bool = False  # transform every sample once and keep the tensors in memory
    skip_errors: bool = True  # a bad sample is skipped, counted and reported, never fatal
    max_samples: Optional[int] = None
    # streamed data (conf/data/shards.yaml, docs/shards.md): a folder written by anybind-shard, a WebDataset URL
    # pattern ("a/{000000..000127}.tar", pipe: commands), or a mixture of corpora with weights
    shards: Optional[str] = None
    urls: Optional[str] = None
    epoch_samples: Optional[int] = None  # samples per epoch (default: the shards' count; required with urls)
    shuffle_buffer: int = 1000
    resampled: bool = False  # draw shards with replacement (an endless stream; epochs are epoch_samples long)
    mixture: list[Any] = field(default_factory=list)  # [{name, shards | urls | manifest, weight, samples}]
    root_only: bool = False  # refuse manifest paths that leave the manifest's folder (.., absolute, symlinks)


@dataclass
class LossConfig:
    kind: str = "infonce"  # infonce | siglip
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_temperature: bool = True
    shared_temperature: bool = False  # one temperature for all pairs instead of one per pair
    init_bias: float = -10.0  # siglip only


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: Optional[float] = 1.0


@dataclass
class TrainerConfig:
    max_steps: int = 1000  # optimizer steps
    max_epochs: Optional[int] = None  # when set, max_steps = epochs * batches per epoch / grad_accum
    grad_accum: int = 1
    accum_steps: int = 1  # cached-negative accumulation: loss and gradients of a batch this many times larger
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA when supported, fp32 on CPU)
    device: str = "auto"  # auto | cpu | cuda
    strategy: str = "ddp"  # ddp | fsdp (torchrun only)
    compile: bool = False
    grad_checkpointing: bool = False
    channels_last: Any = False  # true, or a list of modalities: their Conv2d kernels stored NHWC (train/memory_format.py)
    cache_frozen: bool = False  # embed the preloaded inputs of frozen towers once (anybind/train/frozen_cache.py)
    seed: int = 0
    deterministic: bool = False
    num_threads: Optional[int] = None  # torch intra-op threads per process (default: cores / local processes)
    log_every: int = 10
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    ckpt_every: int = 500
    keep_last: int = 2  # step checkpoints kept besides checkpoints/last
    progress: bool = True
    tensorboard: bool = True
    csv: bool = True


@dataclass
class EvalConfig:
    enabled: bool = True
    manifest: Optional[str] = None  # default: data.val_manifest, else data.manifest
    split: Optional[str] = "val"  # falls back to every sample when the manifest has no splits
    max_samples: Optional[int] = 1000
    batch_size: int = 64
    num_workers: int = 0
    match_key: Optional[str] = None  # None: the label when present, else the id
    zero_shot: bool = True  # classify by text prompts of the labels when text is trained
    prompt: str = "{}"  # e.g. "a photo of a {}"
    heatmap: bool = True


@dataclass
class TrainConfig:
    name: str = "anybind"
    model_size: str = "tiny"  # interpolated into conf/modality/*.yaml encoder names
    # {modality: ModalityConfig}; plain nodes here so that +modality.<m>.encoder=<name> can add one
    # (typed_modalities checks each against ModalityConfig)
    modality: dict[str, Any] = field(default_factory=dict)
    anchor: str = "image"
    pairs: list[PairConfig] = field(default_factory=list)  # empty: the anchor with every other modality
    embed_dim: Optional[int] = None  # default: the encoders' own (all must agree)
    init_from: Optional[str] = None  # anybind checkpoint; towers of matching modalities are loaded
    freeze: list[str] = field(default_factory=list)  # modalities whose towers are not trained
    video_from_image: bool = False  # start the video tower as the inflated image tower (same width, depth, stem)
    resume: Optional[str] = None  # "latest" or a checkpoint directory / run directory
    out_dir: Optional[str] = None  # run directory; default: Hydra's (or runs/<name>/<time> outside Hydra)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """Store the schema under ``train_schema`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def validate_config(cfg: Any) -> DictConfig:
    """Any training config (DictConfig, dict or :class:`TrainConfig`) checked against the schema, with the modality
    nodes that name no encoder dropped.

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


MODALITY_KEYS = ("encoder", "kwargs", "tune", "augment")


def typed_modalities(cfg: DictConfig) -> DictConfig:
    """Check each ``cfg.modality.<m>`` against :class:`ModalityConfig` in place (interpolations kept); returns
    ``cfg``. Raises ``ValueError`` naming ``modality.<m>.<key>`` for a node the schema refuses."""
    for m in list(cfg.modality):
        node = cfg.modality._get_node(m)
        if not isinstance(node, DictConfig):
            raise ValueError(f"modality.{m} must be a mapping with {', '.join(MODALITY_KEYS)}, got {node!r}; "
                             f"use modality.{m}.encoder=<name> (or +modality.{m}.encoder=<name> to add it)")
        try:
            typed = OmegaConf.merge(OmegaConf.structured(ModalityConfig), node)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "") or ""
            problem = str(exc).splitlines()[0]
            raise ValueError(f"modality.{m}{'.' + key if key else ''}: {problem} (a modality node holds "
                             f"{', '.join(MODALITY_KEYS)}; see conf/modality/image.yaml)") from None
        cfg.modality[m] = typed
    return cfg
