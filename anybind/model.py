"""The multi-tower model: one encoder per modality, all projecting into one shared space."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .data.dataset import ItemDataset, reader_options  # noqa: F401 - also importable from here
from .embedding import Autocast, embed_items
from .modality import get_modality
from .registry import create_encoder


class AnyBindModel(nn.Module):
    """Encoders keyed by modality. ``forward`` runs only the modalities present in its input."""

    def __init__(self, encoders: Mapping[str, nn.Module], embed_dim: int):
        super().__init__()
        for m, enc in encoders.items():
            if getattr(enc, "embed_dim", embed_dim) != embed_dim:
                raise ValueError(f"encoder for {m!r} outputs {enc.embed_dim} dims, the model's space has {embed_dim}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.embed_dim = embed_dim

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders.keys())

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def input_contract(self, modality: str) -> dict:
        return dict(self.encoders[modality].input_contract)

    def encoder_spec(self) -> dict[str, dict]:
        """Registry name and builder arguments of every tower: enough to rebuild the model."""
        return {
            m: {"name": getattr(e, "registry_name", None), "kwargs": dict(getattr(e, "build_kwargs", {})),
                "input_contract": dict(e.input_contract),
                **({"lora": dict(e.lora_spec)} if getattr(e, "lora_spec", None) else {})}  # adapters to re-inject
            for m, e in self.encoders.items()
        }

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m, x in batch.items():
            if m not in self.encoders:
                raise KeyError(f"model has no encoder for modality {m!r} (has: {', '.join(self.encoders)})")
            out[m] = self.encoders[m](x)
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for e in self.encoders.values():
            e.set_grad_checkpointing(enable)

    @torch.no_grad()
    def embed(
        self,
        inputs: Mapping[str, Sequence[Any] | Any],
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool | None = None,
        autocast: Autocast = False,
    ) -> dict[str, torch.Tensor]:
        """Embed file paths, strings or decoded tensors; returns L2-normalized ``(N, D)`` float32 per modality.

        ``inputs`` maps a modality to a list of items (a single item is accepted too). Rows come back in input
        order. ``progress`` shows a bar (default: when there are more than 8 batches). ``autocast``: ``False``
        (float32), ``True`` or ``"bf16"`` (bfloat16 towers), ``"fp16"``. A bad item raises
        :class:`~anybind.errors.InputError`; :func:`anybind.embedding.embed_items` skips and reports them instead.
        The loop is :func:`anybind.embedding.encode_batches`.
        """
        out: dict[str, torch.Tensor] = {}
        for m, items in inputs.items():
            if m not in self.encoders:
                raise KeyError(f"model has no encoder for modality {m!r} (has: {', '.join(self.encoders)})")
            if isinstance(items, (str, bytes, torch.Tensor)) or not isinstance(items, Sequence):
                items = [items]
            out[m] = embed_items(self, m, items, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                 autocast=autocast).embeddings
        return out


def default_encoders(modalities: Iterable[str] | None = None) -> dict[str, str]:
    from .modality import BUILTIN_MODALITIES

    mods = list(modalities) if modalities is not None else list(BUILTIN_MODALITIES)
    names = {}
    for m in mods:
        spec = get_modality(m)
        if spec.default_encoder is None:
            raise ValueError(f"modality {m!r} has no default encoder; name one explicitly")
        names[m] = spec.default_encoder
    return names


def create_model(
    encoders: Mapping[str, str | Mapping[str, Any]] | Sequence[str] | None = None,
    embed_dim: int | None = None,
) -> AnyBindModel:
    """Build a model from registry names.

    ``encoders`` maps modality -> encoder name, or -> ``{"name": ..., **builder kwargs}``; a list of modalities
    uses each one's default encoder; ``None`` gives the default tiny encoder of every built-in modality.
    Weights are random; use :func:`anybind.load` for trained ones.
    """
    if encoders is None or (isinstance(encoders, Sequence) and not isinstance(encoders, str)):
        encoders = default_encoders(encoders)
    towers = {}
    for m, spec in encoders.items():
        get_modality(m)  # fails early, naming the modality, if unknown
        if isinstance(spec, str):
            name, kwargs = spec, {}
        else:
            kwargs = dict(spec)
            name = kwargs.pop("name")
            kwargs.update(kwargs.pop("kwargs", {}) or {})
        if embed_dim is not None:
            kwargs["embed_dim"] = embed_dim
        enc = create_encoder(name, **kwargs)
        if enc.modality != m:
            raise ValueError(f"encoder {name!r} is for modality {enc.modality!r}, not {m!r}")
        towers[m] = enc
    dims = {e.embed_dim for e in towers.values()}
    if len(dims) != 1:
        raise ValueError(f"encoders disagree on embed_dim: { {m: e.embed_dim for m, e in towers.items()} }; pass embed_dim=")
    return AnyBindModel(towers, dims.pop())
