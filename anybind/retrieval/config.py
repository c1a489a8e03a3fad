"""Structured configs of ``anybind-embed`` and ``anybind-eval`` (``conf/embed.yaml``, ``conf/evaluate.yaml``).

Registered in Hydra's ConfigStore as ``embed_schema`` / ``evaluate_schema`` and named first in each primary
config's defaults, so a misspelled key fails at compose time. ``EvaluateConfig`` lives in :mod:`anybind.eval.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class ModelConfig:
    checkpoint: Optional[str] = None  # anybind.load path (a trained or converted checkpoint)
    encoders: Any = None  # {modality: registry name}: a random model (smoke tests); Any so a dict can replace null
    device: str = "cpu"


@dataclass
class IndexConfig:
    build: bool = True
    kind: str = "auto"  # auto | flat | hnsw | ivfpq | ivfpq_disk
    memory_budget: Optional[str] = None  # e.g. "4G"; default: half the machine's memory; picks the kind
    out: Optional[str] = None  # default: <out>/index
    threads: Optional[int] = None


@dataclass
class EmbedConfig:
    input: str = MISSING  # a manifest (.jsonl/.csv) or a folder
    out: str = MISSING  # the store folder
    model: ModelConfig = field(default_factory=ModelConfig)
    # force the modality of a folder's files (default: from the extension); not `modality`, which is the name of
    # the training config group conf/modality/ and so cannot be a plain key on the command line
    as_modality: Optional[str] = None
    text_sidecars: bool = False  # folders: embed a .txt beside a media file of the same name too (default: skip)
    modalities: Optional[list[str]] = None  # keep only these
    split: Optional[str] = None
    root_only: bool = False  # refuse paths that escape the manifest's / folder's own folder (.., absolute, symlinks)
    shard_size: int = 4096
    flush_seconds: Optional[float] = 30.0  # write a shard's rows so far at least this often; None: whole shards
    batch_size: int = 64
    num_workers: Any = "auto"  # an int, or auto (from the machine: anybind.embedding.auto_workers)
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto: bf16 where the hardware multiplies it natively (AMX CPU, GPU)
    dtype: str = "float32"  # float32 | float16
    overwrite: bool = False
    progress: bool = True
    index: IndexConfig = field(default_factory=IndexConfig)


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    from ..eval.config import EvaluateConfig

    cs = ConfigStore.instance()
    cs.store(name="embed_schema", node=EmbedConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)


def to_plain(cfg: Any) -> dict:
    """A composed config (or a mapping) as a plain dict, interpolations resolved: what the commands read."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
