"""The multi-tower model: one encoder per modality, all projecting into one shared space."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .errors import InputError
from .modality import get_modality
from .registry import create_encoder


class ItemDataset(Dataset):
    """Raw user items of one modality -> transformed tensors (runs in DataLoader workers).

    With ``skip_errors`` a bad item yields ``(index, None, error message)`` instead of raising, so long runs
    continue and report what they skipped. With ``timed`` every batch also carries the seconds its items spent
    being read (decoded) and transformed: ``{"read": s, "transform": s}``.
    """

    def __init__(self, modality: str, items: Sequence[Any], contract: dict, skip_errors: bool = False,
                 timed: bool = False):
        self.modality = get_modality(modality)
        self.items = list(items)
        self.contract = dict(contract)
        self.skip_errors = skip_errors
        self.timed = timed
        # built here, once: DataLoader workers forked later inherit it (and a tokenizer it prepared)
        self._transform = prepared_transform(self.modality, self.contract)
        self._read_options = reader_options(self._transform)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        if get_worker_info() is None and torch.get_num_threads() > 1:
            # in the main process (num_workers=0): decode and transform on one thread, as a worker does. Their many
            # small ops gain nothing from more threads and, right after a tower's parallel regions, lose up to 40x
            # to OpenMP's spinning threads (a 3-clip log-mel: 0.76 s on 2 threads, 0.017 s on one)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._item(i)
            finally:
                torch.set_num_threads(threads)
        return self._item(i)

    def _item(self, i: int):
        t0 = time.perf_counter()
        t1 = t0
        try:
            raw, source = self.modality.load(self.items[i], **self._read_options)
            t1 = time.perf_counter()
            try:
                x = self._transform(raw)
            except InputError as err:
                if err.source.startswith("<") and err.source != source:  # transforms do not know the file name
                    raise InputError(source, self.modality.name, err.problem) from err
                raise
            except Exception as exc:
                raise InputError(source, self.modality.name, f"transform failed ({type(exc).__name__}: {exc})") from exc
            row = (i, x, None)
            t2 = time.perf_counter()
            lazy = float(getattr(raw, "decode_seconds", 0.0) or 0.0)  # a lazy source decodes during the transform
            if self.timed:
                return (*row, (t1 - t0 + lazy, max(0.0, t2 - t1 - lazy)))
            return row
        except InputError as err:
            if not self.skip_errors:
                raise
            row = (i, None, str(err))
        return (*row, (t1 - t0, time.perf_counter() - t1)) if self.timed else row

    def collate(self, rows):
        idx = [r[0] for r in rows if r[1] is not None]
        xs = [r[1] for r in rows if r[1] is not None]
        errors = [(r[0], r[2]) for r in rows if r[1] is None]
        batch = self.modality.collate_fn(xs) if xs else None
        out = (torch.tensor(idx, dtype=torch.long), batch, errors)
        if self.timed:
            return (*out, {"read": sum(r[3][0] for r in rows), "transform": sum(r[3][1] for r in rows)})
        return out


def prepared_transform(modality, contract: dict):
    """``modality.make_transform(contract)``, with its expensive state (a tokenizer) built now, in this process."""
    fn = modality.make_transform(contract)
    prepare = getattr(fn, "prepare", None)
    if callable(prepare):
        prepare()
    return fn


def reader_options(transform) -> dict:
    """What a transform asks of the reader (``ImageTransform``: decode a JPEG at reduced size when it will be
    shrunk anyway); ``{}`` for transforms that need the file decoded exactly (library and ImageBind parity)."""
    options = getattr(transform, "reader_options", None)
    return dict(options) if isinstance(options, dict) else {}


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


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
        autocast: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Embed file paths, strings or decoded tensors; returns L2-normalized ``(N, D)`` float32 per modality.

        ``inputs`` maps a modality to a list of items (a single item is accepted too). Rows come back in input
        order. ``progress`` shows a bar (default: when there are more than 8 batches). A bad item raises
        :class:`~anybind.errors.InputError`; :func:`embed_items` skips and reports them instead.
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


def make_loader(dataset: Dataset, *, collate_fn, batch_size: int | None = None, batch_sampler=None,
                num_workers: int = 0, device: torch.device | None = None) -> DataLoader:
    """The DataLoader every embedding path uses: one intra-op thread per worker, pinned memory for CUDA."""
    from .data.dataset import worker_init

    kw = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return DataLoader(dataset, collate_fn=collate_fn, num_workers=num_workers,
                      worker_init_fn=worker_init if num_workers else None,
                      pin_memory=device is not None and device.type == "cuda", **kw)


@torch.no_grad()
def encode_batches(encoder: nn.Module, batches: Iterable[tuple[Any, torch.Tensor | None]], *,
                   device: torch.device, autocast: bool = False) -> Iterator[tuple[Any, torch.Tensor | None]]:
    """The one embedding loop: ``(tag, inputs)`` -> ``(tag, (n, D) float32 unit vectors on the CPU)``.

    ``tag`` is passed through (row indices, ids, error lists); ``inputs`` of ``None`` (a batch whose every item
    failed) yields ``None``. ``autocast`` runs the tower under bfloat16 autocast on ``device``'s type. Gradients
    are off; the caller puts the tower in eval mode.
    """
    for tag, x in batches:
        if x is None:
            yield tag, None
            continue
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with amp:
            z = encoder(x.to(device, non_blocking=True))
        yield tag, torch.nn.functional.normalize(z.float(), dim=-1).cpu()


@dataclass
class EmbeddedItems:
    """:func:`embed_items`' result: ``embeddings`` ``(N, D)`` in input order (zero rows where ``ok`` is False)
    and ``errors`` ``[(index, message)]`` for the items that could not be read or transformed."""

    embeddings: torch.Tensor
    ok: torch.Tensor
    errors: list[tuple[int, str]] = field(default_factory=list)


def embed_items(model: "AnyBindModel", modality: str, items: Sequence[Any], *, batch_size: int = 32,
                num_workers: int = 0, progress: bool | None = None, autocast: bool = False,
                skip_errors: bool = False) -> EmbeddedItems:
    """Embed one modality's items (paths, strings, arrays or tensors) through DataLoader workers.

    ``skip_errors=False`` raises the first :class:`~anybind.errors.InputError`; ``True`` leaves bad items out
    (``ok`` False) and lists them in ``errors``, so an evaluation can report every file it could not use.
    """
    encoder, device = model.encoders[modality], model.device
    ds = ItemDataset(modality, items, encoder.input_contract, skip_errors=skip_errors)
    loader = make_loader(ds, collate_fn=ds.collate, batch_size=batch_size, num_workers=num_workers, device=device)
    show = progress if progress is not None else len(loader) > 8
    result = torch.zeros(len(ds), model.embed_dim)
    ok = torch.zeros(len(ds), dtype=torch.bool)
    errors: list[tuple[int, str]] = []
    was_training = encoder.training
    encoder.eval()
    try:
        batches = (((idx, errs), batch) for idx, batch, errs in _progress(loader, len(loader), f"embed {modality}", show))
        for (idx, errs), z in encode_batches(encoder, batches, device=device, autocast=autocast):
            errors.extend(errs)
            if z is not None:
                result[idx] = z
                ok[idx] = True
    finally:
        encoder.train(was_training)
    return EmbeddedItems(result, ok, errors)


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
