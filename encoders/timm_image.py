"""timm image backbones (Wightman, "PyTorch Image Models", https://github.com/huggingface/pytorch-image-models) as
the anybind encoder ``timm_image``.

timm builds the model (``model_name`` may carry a pretrained tag, ``resnet18.tv_in1k``: the tag selects the
pretrained config, hence the preprocessing) without its classifier; the embedding is timm's pooled pre-logits,
``forward_head(forward_features(x), pre_logits=True)``, optionally followed by a bias-free linear projection
(``embed_dim``). ``pretrained`` is a LOCAL file (a timm ``state_dict``; the classifier is dropped, timm's own
``checkpoint_filter_fn`` remaps original-format files); parameters are created on the meta device and the file's
tensors adopted, so the weights exist once in memory. The input contract is the tag's data config (input size,
mean, std, interpolation, crop_pct, crop_mode) in :mod:`anybind.data.library_transforms` terms.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anybind.errors import RegistryError
from anybind.pretrained.weights import assign_state, params_on_meta, weights_deferred, weights_source
from anybind.registry import register_encoder

from ._common import read_state_dict

_CROP_MODES = {"center": "shortest", "squash": "squash", "border": "longest"}


def timm_contract(data_cfg: dict) -> dict:
    """timm's resolved data config -> an anybind image contract reproducing ``timm.data.create_transform``."""
    _, h, w = data_cfg["input_size"]
    crop_pct = data_cfg.get("crop_pct") or 0.875
    mode = _CROP_MODES.get(data_cfg.get("crop_mode") or "center")
    if mode is None:
        raise ValueError(f"timm crop_mode {data_cfg.get('crop_mode')!r} is not one of {sorted(_CROP_MODES)}")
    scale = [math.floor(h / crop_pct), math.floor(w / crop_pct)]
    mean, std = [float(m) for m in data_cfg["mean"]], [float(s) for s in data_cfg["std"]]
    return {"compat": "timm", "image_size": h if h == w else [h, w],
            "resize_size": scale[0] if scale[0] == scale[1] else scale, "resize_mode": mode, "mean": mean, "std": std,
            "interpolation": data_cfg.get("interpolation", "bicubic"), "crop_pct": crop_pct,
            "fill": [round(255 * m) for m in mean] if mode == "longest" else 0}


def _create(model_name: str, model_kwargs: dict, on_meta: bool) -> nn.Module:
    import timm

    base, _, tag = model_name.partition(".")
    if not timm.is_model(base):
        names = timm.list_models()
        close = difflib.get_close_matches(base, names, n=5, cutoff=0.5)
        raise RegistryError(f"unknown timm model {model_name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                            f"; timm knows {len(names)}: see timm.list_models()"))
    if tag and model_name not in timm.list_pretrained(model_name):
        raise RegistryError(f"timm model {base!r} has no pretrained tag {tag!r}; its tags: "
                            f"{[n.partition('.')[2] for n in timm.list_pretrained(base + '.*')]}")
    with params_on_meta() if on_meta else contextlib.nullcontext():
        return timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    cls = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{c}." for c in ((cls,) if isinstance(cls, str) else cls))


def timm_state(path: str | Path, model: nn.Module, model_name: str) -> dict[str, torch.Tensor]:
    """A local timm checkpoint without the classifier; remapped by the model's ``checkpoint_filter_fn`` when its
    keys are not already the model's."""
    drop = _classifier_keys(model)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(drop)}
    own = model.state_dict().keys()
    if set(state) != set(own):
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                state = {k: v for k, v in filter_fn(state, model).items() if not k.startswith(drop)}
            except Exception:  # noqa: BLE001 - the exact key comparison below names the problem
                pass
    return state


class TimmImageEncoder(nn.Module):
    """A timm backbone's pooled pre-logits (``trunk``), then ``proj`` (or none) -> L2-normalized embeddings."""

    def __init__(self, trunk: nn.Module, proj: nn.Module | None, *, embed_dim: int, input_contract: dict):
        super().__init__()
        self.modality, self.embed_dim = "image", embed_dim
        self.trunk = trunk
        self.proj = proj
        self.input_contract = dict(input_contract)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)

    def forward_head(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk.forward_head(tokens, pre_logits=True)
        return self.proj(pooled) if self.proj is not None else pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_head(self.forward_features(x), x).float(), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)


@register_encoder("timm_image", modality="image")
def timm_image(model_name: str = "vit_tiny_patch16_224", pretrained: str | Path | None = None,
               embed_dim: int | None = None, model_kwargs: dict[str, Any] | None = None) -> TimmImageEncoder:
    """timm ``model_name`` (tag allowed); ``embed_dim`` adds a projection, ``None`` keeps the pre-logits width."""
    deferred = weights_deferred()
    trunk = _create(model_name, dict(model_kwargs or {}), on_meta=bool(pretrained) or deferred)
    if pretrained:
        assign_state(trunk, timm_state(pretrained, trunk, model_name), source=str(pretrained),
                     what=f"timm {model_name} backbone")
    import timm

    width = int(getattr(trunk, "head_hidden_size", None) or trunk.num_features)
    proj = None
    if embed_dim is not None:
        with params_on_meta() if deferred else contextlib.nullcontext():
            proj = nn.Linear(width, int(embed_dim), bias=False)
        if not deferred:
            nn.init.trunc_normal_(proj.weight, std=width ** -0.5)
    contract = timm_contract(timm.data.resolve_model_data_config(trunk))
    enc = TimmImageEncoder(trunk, proj, embed_dim=int(embed_dim) if embed_dim is not None else width,
                           input_contract=contract)
    info = {"library": "timm", "model_name": model_name, "tower": "image", "config": dict(model_kwargs or {})}
    enc.weights_source = weights_source(pretrained, **info) if pretrained else {**info, "weights": "random"}
    return enc
