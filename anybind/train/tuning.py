"""Per-tower tuning: which weights of each tower train, and at what learning-rate scale.

Every ``conf/modality/<m>.yaml`` carries::

    tune: {mode: full, last_n: 0, lr_scale: 1.0, lora: {rank: 8, alpha: 16, dropout: 0.0, targets: null}}

* ``full``: every weight trains (the default).
* ``frozen``: nothing trains; the tower runs in eval mode without autograd (the same as listing it in
  ``freeze=[...]``, which stays as a shorthand).
* ``last_n``: the last ``last_n`` transformer blocks and everything after them (final norm, pooler, head,
  projection) train; the stem and the earlier blocks stay as loaded.
* ``lora``: LoRA adapters (:mod:`anybind.lora`, through ``peft``) on ``lora.targets`` (null: the attention and MLP
  Linear layers of the blocks) plus the tower's projection train; the base weights stay bit-identical.

``lr_scale`` multiplies the optimizer's learning rate for that tower's parameters (its own AdamW groups).
``python -m anybind.train.tuning merge IN OUT`` writes a checkpoint whose LoRA adapters are merged into plain weights.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from torch import nn

from ..lora import add_lora, blocks_of, merge_lora

MODES = ("full", "frozen", "last_n", "lora")
DEFAULT_TUNE = {"mode": "full", "last_n": 0, "lr_scale": 1.0,
                "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targets": None}}


def tune_options(node: Any) -> dict[str, Any]:
    """A modality's ``tune`` node (DictConfig, dict or None) as a plain dict with every key, checked."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    out = {**DEFAULT_TUNE, **raw, "lora": {**DEFAULT_TUNE["lora"], **(raw.get("lora") or {})}}
    if out["mode"] not in MODES:
        raise ValueError(f"tune.mode must be one of {', '.join(MODES)}, got {out['mode']!r}")
    if out["lr_scale"] < 0:
        raise ValueError(f"tune.lr_scale must be >= 0, got {out['lr_scale']}")
    return out


def modality_tuning(cfg) -> dict[str, dict[str, Any]]:
    """``{modality: tune options}`` of a training config; ``freeze=[m]`` means ``mode: frozen``."""
    out = {}
    for m, c in cfg.modality.items():
        t = tune_options(c.get("tune") if hasattr(c, "get") else None)
        if m in cfg.freeze:
            if t["mode"] not in ("full", "frozen"):
                raise ValueError(f"modality {m!r} is in freeze={list(cfg.freeze)} but has tune.mode={t['mode']!r}")
            t["mode"] = "frozen"
        out[m] = t
    return out


def frozen_modalities(cfg) -> list[str]:
    """``freeze`` first (in its order), then towers whose ``tune.mode`` is ``frozen``."""
    tuning = modality_tuning(cfg)
    return list(cfg.freeze) + [m for m, t in tuning.items() if t["mode"] == "frozen" and m not in cfg.freeze]


def train_last_n(tower: nn.Module, n: int) -> list[str]:
    """Freeze ``tower`` except its last ``n`` blocks and every parameter registered after the blocks."""
    blocks = blocks_of(tower)
    if not 0 <= n <= len(blocks):
        raise ValueError(f"tune.last_n={n} but the {getattr(tower, 'modality', '?')} tower has {len(blocks)} blocks")
    in_blocks = {id(p) for p in blocks.parameters()}
    last = {id(p) for b in list(blocks)[len(blocks) - n:] for p in b.parameters()}
    params = list(tower.named_parameters())
    end = max(i for i, (_, p) in enumerate(params) if id(p) in in_blocks)
    trained = []
    for i, (name, p) in enumerate(params):
        p.requires_grad_(id(p) in last or i > end)
        if p.requires_grad:
            trained.append(name)
    return trained


def apply_tuning(model, tuning: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Apply ``last_n`` and ``lora`` to the model's towers (``frozen`` is the train module's job); returns the
    number of trainable parameters per tower."""
    for m, t in tuning.items():
        tower = model.encoders[m]
        if t["mode"] == "last_n":
            train_last_n(tower, int(t["last_n"]))
        elif t["mode"] == "lora":
            lo = t["lora"]
            add_lora(tower, rank=lo["rank"], alpha=lo["alpha"], dropout=lo["dropout"], targets=lo["targets"])
    return {m: sum(p.numel() for p in model.encoders[m].parameters() if p.requires_grad) for m in tuning}


def lr_scales(tuning: Mapping[str, Mapping[str, Any]], prefix: str = "model.encoders.") -> dict[str, float]:
    """Parameter-name prefixes of towers whose learning rate is scaled (``{"model.encoders.text.": 0.1}``)."""
    return {f"{prefix}{m}.": float(t["lr_scale"]) for m, t in tuning.items() if float(t["lr_scale"]) != 1.0}


def merge_checkpoint(src, dst) -> None:
    """Load ``src`` (adapters and all), merge every LoRA adapter, save plain weights to ``dst``."""
    from ..checkpoint import load, save_model

    model = load(src)
    for tower in model.encoders.values():
        merge_lora(tower)
    meta = model.checkpoint_meta
    save_model(dst, model, config=meta.get("config"), extra={k: v for k, v in meta.items() if k in ("trained_pairs",)})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m anybind.train.tuning")
    sub = ap.add_subparsers(dest="cmd", required=True)
    mp = sub.add_parser("merge", help="merge LoRA adapters into plain weights")
    mp.add_argument("src")
    mp.add_argument("dst")
    a = ap.parse_args(argv)
    merge_checkpoint(a.src, a.dst)
    print(f"merged {a.src} -> {a.dst}")


if __name__ == "__main__":
    main()
