"""Hugging Face towers: any local ``transformers`` text or audio model folder as an anybind tower.

* transformers: https://github.com/huggingface/transformers (the model, its tokenizer and feature extractor)
* sentence-transformers pooling: Reimers and Gurevych, https://arxiv.org/abs/1908.10084
* Audio Spectrogram Transformer: Gong et al., https://arxiv.org/abs/2104.01778

``hf_text(path=FOLDER)`` and ``hf_audio(path=FOLDER)`` run the folder's own model (``AutoModel``) on inputs made by
the folder's own tokenizer / feature extractor (:mod:`anybind.data.hf`), so embeddings equal the library's:
a sentence-transformers folder gives what ``SentenceTransformer.encode`` gives. ``embed_dim=None`` keeps the pooled
output as it is (its width is the tower's ``embed_dim``); an int adds a linear projection to that width.

Pooling (``pooling="auto"``): text reads ``1_Pooling/config.json`` when the folder is a sentence-transformers model
(``cls`` / ``mean`` / ``max`` / ``mean_sqrt_len``, padding masked; several modes concatenate), else the model's
``pooler_output`` when it has one (BERT's tanh pooler over CLS), else the CLS token. Audio uses ``pooler_output``
when the model has one (AST: mean of its CLS and distillation tokens), else the mean over frames (Wav2Vec2,
HuBERT). A ``Normalize`` module in ``modules.json`` L2-normalizes the pooled vector before any projection.

``transformers`` is optional (``pip install anybind[hf]``): it is imported only when a tower is built.
Folders are read with ``local_files_only=True``; a folder without ``config.json``, tokenizer or feature
extractor fails naming the missing file.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anybind.pretrained.hf_folder import load_feature_extractor, load_tokenizer, model_folder, require_transformers
from anybind.errors import CheckpointError
from anybind.pretrained.weights import params_on_meta, weights_deferred
from anybind.registry import register_encoder

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "pooler")
_ST_POOLING_KEYS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                    ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"))
_ST_UNSUPPORTED = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """``(N, L, W)`` tokens -> ``(N, W)``; ``mask`` (``(N, L)``, 1 = real token) keeps padding out."""
    if mode == "cls":
        return tokens[:, 0]
    m = torch.ones(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device) if mask is None else mask.to(tokens.dtype)
    m = m.unsqueeze(-1)
    if mode == "max":
        return tokens.masked_fill(m == 0, -1e9).max(dim=1).values
    total, count = (tokens * m).sum(dim=1), m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len":
        return total / count.sqrt()
    raise ValueError(f"unknown pooling {mode!r} (known: {', '.join(POOLING_MODES)})")


class HFTower(nn.Module):
    """A ``transformers`` model, pooled, optionally normalized and projected (:class:`anybind.EncoderProtocol`).

    ``forward_features(x)`` returns the model's output (``last_hidden_state`` and, where the model has one,
    ``pooler_output``); ``forward_head(features, x)`` pools it into ``(N, embed_dim)``; ``forward`` L2-normalizes.
    Text input is int64 ``(N, 2, L)`` (ids, attention mask); columns that are padding in every row are dropped
    before the model runs, so a batch costs its longest text, not ``max_length``.
    """

    def __init__(self, model: nn.Module, *, modality: str, pooling: Sequence[str], normalize: bool,
                 embed_dim: int | None, input_contract: dict[str, Any], width: int):
        super().__init__()
        bad = [p for p in pooling if p not in POOLING_MODES]
        if bad or not pooling:
            raise ValueError(f"hf_{modality}: unknown pooling {bad or pooling} (known: {', '.join(POOLING_MODES)})")
        self.model, self.modality, self.pooling = model, modality, tuple(pooling)
        self.normalize, self.width = bool(normalize), width
        pooled = width * len(self.pooling)
        self.proj = nn.Identity() if embed_dim is None else nn.Linear(pooled, int(embed_dim), bias=False)
        if embed_dim is not None:
            nn.init.normal_(self.proj.weight, std=pooled ** -0.5)
        self.embed_dim = pooled if embed_dim is None else int(embed_dim)
        self.input_contract = dict(input_contract)

    def _model_inputs(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if self.modality != "text":
            return {"input_values": x}, None
        if x.ndim != 3 or x.shape[1] != 2 or x.is_floating_point():
            raise ValueError(f"hf_text expects int64 (N, 2, L) token ids and attention mask, got {tuple(x.shape)} "
                             f"{x.dtype}; the text transform must use this tower's input contract")
        ids, mask = x[:, 0], x[:, 1]
        keep = mask.bool().any(dim=0)
        ids, mask = ids[:, keep], mask[:, keep]
        return {"input_ids": ids, "attention_mask": mask}, mask

    def forward_features(self, x: torch.Tensor):
        inputs, _ = self._model_inputs(x)
        return self.model(**inputs)

    def forward_head(self, features, x: torch.Tensor) -> torch.Tensor:
        _, mask = self._model_inputs(x)
        parts = []
        for mode in self.pooling:
            if mode == "pooler":
                if getattr(features, "pooler_output", None) is None:
                    raise ValueError(f"hf_{self.modality}: pooling='pooler' but {type(self.model).__name__} returns "
                                     "no pooler_output; use cls or mean")
                parts.append(features.pooler_output)
            else:
                parts.append(pool_tokens(features.last_hidden_state, mask, mode))
        z = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return self.proj(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_head(self.forward_features(x), x).float(), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            return
        if enable:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()


# ------------------------------------------------------------------------------------------ folder reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} could not be read as JSON: {exc}") from exc


def sentence_transformers_options(folder: Path) -> dict[str, Any]:
    """What a sentence-transformers folder says: ``pooling`` (list or None), ``normalize``, ``max_length``,
    ``lowercase``. A plain transformers folder gives ``{"pooling": None, "normalize": False, ...}``."""
    out: dict[str, Any] = {"pooling": None, "normalize": False, "max_length": None, "lowercase": False}
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    pool_dir = next((folder / m["path"] for m in modules if m.get("type", "").endswith(".Pooling")), folder / "1_Pooling")
    out["normalize"] = any(m.get("type", "").endswith(".Normalize") for m in modules)
    if (pool_dir / "config.json").is_file():
        cfg = _read_json(pool_dir / "config.json")
        bad = [k for k in _ST_UNSUPPORTED if cfg.get(k)]
        if bad:
            raise CheckpointError(f"hf_text: {pool_dir / 'config.json'} asks for {bad}, which anybind does not "
                                  f"support (supported: {[k for k, _ in _ST_POOLING_KEYS]})")
        if isinstance(cfg.get("pooling_mode"), str):
            out["pooling"] = [{"mean_sqrt_len_tokens": "mean_sqrt_len"}.get(cfg["pooling_mode"], cfg["pooling_mode"])]
        else:
            out["pooling"] = [mode for key, mode in _ST_POOLING_KEYS if cfg.get(key)]
        if not out["pooling"]:
            raise CheckpointError(f"hf_text: {pool_dir / 'config.json'} enables no pooling mode")
    if (folder / "sentence_bert_config.json").is_file():
        sb = _read_json(folder / "sentence_bert_config.json")
        out["max_length"], out["lowercase"] = sb.get("max_seq_length"), bool(sb.get("do_lower_case", False))
    return out


def _has_pooler(model: nn.Module) -> bool:
    if hasattr(model, "pooler"):
        return model.pooler is not None
    return "Pooling" in str(inspect.signature(type(model).forward).return_annotation)


def _load_model(folder: Path, modality: str) -> nn.Module:
    """The folder's model; inside :func:`~anybind.pretrained.weights.deferred_weights` (``anybind.load``) only its
    architecture, on the meta device, from ``config.json``: the checkpoint supplies every tensor."""
    transformers = require_transformers()
    try:
        if weights_deferred():  # anybind.load supplies every tensor: the architecture only, parameters on meta
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            on_meta = torch.empty(0).is_meta  # already inside a meta-device build (checking a sidecar)
            with contextlib.nullcontext() if on_meta else params_on_meta():
                return transformers.AutoModel.from_config(config).eval()
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"hf_{modality}: the model in {folder} could not be loaded (config.json and weights "
                              f"such as model.safetensors): {type(exc).__name__}: {exc}") from exc
    return model.eval()


def _resolve_pooling(pooling: str | Sequence[str], auto: list[str], modality: str) -> list[str]:
    modes = auto if pooling == "auto" else ([pooling] if isinstance(pooling, str) else list(pooling))
    bad = [p for p in modes if p not in POOLING_MODES]
    if bad:
        raise ValueError(f"hf_{modality}: unknown pooling {bad} (known: auto, {', '.join(POOLING_MODES)})")
    return modes


# ------------------------------------------------------------------------------------------------ builders
@register_encoder("hf_text", modality="text")
def hf_text(*, path: str | Path, embed_dim: int | None = None, pooling: str | Sequence[str] = "auto",
            normalize: bool | None = None, max_length: int | None = None) -> HFTower:
    """A local Hugging Face text model folder (sentence-transformers folders included).

    ``max_length`` defaults to sentence-transformers' ``max_seq_length``, else the smaller of the tokenizer's
    ``model_max_length`` and the config's ``max_position_embeddings``. ``normalize=None`` follows ``modules.json``.
    """
    folder = model_folder(path, "text")
    tokenizer = load_tokenizer(folder)
    st = sentence_transformers_options(folder)
    model = _load_model(folder, "text")
    auto = st["pooling"] or (["pooler"] if _has_pooler(model) else ["cls"])
    limits = [v for v in (getattr(tokenizer, "model_max_length", None),
                          getattr(model.config, "max_position_embeddings", None)) if v and v < 1_000_000]
    length = int(max_length or st["max_length"] or (min(limits) if limits else 512))
    contract = {"compat": "hf", "library": "transformers", "model_type": model.config.model_type,
                "tokenizer": str(folder), "max_length": length, "lowercase": st["lowercase"]}
    tower = HFTower(model, modality="text", pooling=_resolve_pooling(pooling, auto, "text"),
                    normalize=st["normalize"] if normalize is None else normalize, embed_dim=embed_dim,
                    input_contract=contract, width=model.config.hidden_size)
    tower.asset_folder = folder
    return tower


@register_encoder("hf_audio", modality="audio")
def hf_audio(*, path: str | Path, embed_dim: int | None = None, pooling: str | Sequence[str] = "auto",
             normalize: bool = False, clip_duration: float = 10.0) -> HFTower:
    """A local Hugging Face audio model folder with its feature extractor (AST, Wav2Vec2, HuBERT, ...).

    The feature extractor is the input contract: its sampling rate, and its own padding for spectrogram models
    (AST: a fixed number of frames). Raw-waveform models get every file padded / cropped to ``clip_duration``
    seconds so that a batch stacks.
    """
    folder = model_folder(path, "audio")
    fe = load_feature_extractor(folder)
    rate = int(getattr(fe, "sampling_rate", 16000))
    shapes = [tuple(fe(torch.zeros(n).numpy(), sampling_rate=rate, return_tensors="pt")["input_values"][0].shape)
              for n in (rate // 2, rate)]
    fixed = len(shapes[0]) > 1 and shapes[0] == shapes[1]  # a spectrogram extractor that pads to a fixed length
    model = _load_model(folder, "audio")
    contract = {"compat": "hf", "library": "transformers", "model_type": model.config.model_type,
                "feature_extractor": str(folder), "sample_rate": rate,
                "max_samples": None if fixed else int(round(clip_duration * rate)),
                "feature_shape": list(shapes[0]) if fixed else None}
    auto = ["pooler"] if _has_pooler(model) else ["mean"]
    tower = HFTower(model, modality="audio", pooling=_resolve_pooling(pooling, auto, "audio"), normalize=normalize,
                    embed_dim=embed_dim, input_contract=contract, width=model.config.hidden_size)
    tower.asset_folder = folder
    return tower
