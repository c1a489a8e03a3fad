"""Structured config of ``anybind-eval`` (``conf/evaluate.yaml`` and the group ``conf/benchmark/``).

Registered as ``evaluate_schema`` (by :func:`anybind.retrieval.config.register_configs`), so a misspelled key
fails at compose time, in ``benchmark.*`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class EvalModelConfig:
    checkpoint: Optional[str] = None  # anybind.load path (a trained or converted checkpoint)
    # {modality: registry name} for a random model, or "default": the default tiny tower of every modality the
    # evaluation needs, randomly initialised (an untrained baseline); Any so a dict can replace null
    encoders: Any = None
    seed: int = 0  # seeds the random initialisation of an untrained model (its weights sha256 is recorded)
    device: str = "cpu"


@dataclass
class BenchmarkConfig:
    name: str = "folder"  # esc50 | modelnet40 | msrvtt | clotho | audiocaps | folder | coco
    root: Optional[str] = None  # the local copy, in the dataset's published layout
    split: Optional[str] = None  # default: the benchmark's protocol split (test, 1k-A, evaluation, ...)
    fold: Any = None  # esc50: 1-5 or a list; null = all five folds
    variant: Optional[str] = None  # modelnet40: off | npy | txt | h5 (default: detected)
    modality: Optional[str] = None  # folder: default from the files' extensions
    classnames: Any = None  # folder: a JSON file or mapping {folder: name}, or a list in folder order
    templates: Optional[list[str]] = None  # default: the benchmark's shipped templates
    captions: Optional[str] = None  # coco: a captions JSON (Karpathy's or the official format)


@dataclass
class EvaluateConfig:
    manifest: Optional[str] = None  # a manifest to evaluate, or give benchmark=<name> benchmark.root=<path>
    benchmark: Optional[BenchmarkConfig] = None
    out_dir: Optional[str] = None  # run directory; default: Hydra's
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    split: Optional[str] = "test"  # manifest: all samples when no sample declares a split (recorded as null)
    modalities: Optional[list[str]] = None
    match_key: Optional[str] = None  # None: label when present, else id
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    trained_pairs: Optional[list[list[str]]] = None  # default: from the checkpoint sidecar
    zero_shot: Any = "auto"  # auto: when the labels look like class names; true; false
    templates: list[str] = field(default_factory=lambda: ["{}", "a {}", "a photo of a {}", "the sound of a {}"])
    dataset: Optional[str] = None  # names zero-shot results; default: the manifest's file stem
    batch_size: int = 64
    num_workers: int = 2
    autocast: bool = False  # benchmarks: bfloat16 autocast of the towers
    store: Optional[str] = None  # default: <out_dir>/embeddings (reused when it exists: resumable)
    heatmap: bool = True
    progress: bool = True
