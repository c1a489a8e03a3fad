"""The datasets that feed the towers: raw items or manifest samples -> transformed tensors -> batches.

:class:`ItemDataset` holds one modality's raw items (paths, strings, arrays, tensors): what ``model.embed``,
``anybind-embed`` and the benchmarks embed. :class:`ManifestDataset` views a manifest through the model's input
contracts: what training and manifest evaluation read. Both build each transform once per process
(:func:`prepared_transform`), ask the reader only what the transform allows (:func:`reader_options`), and name the
file in every error (:func:`apply_transform`); :func:`worker_init` sets up their DataLoader workers.

A :class:`ManifestDataset` item is ``(index, modalities_to_load, step_modalities)`` (or a bare index: every
modality the sample has). Each modality goes through its encoder's transform (``get_modality(m).make_transform(contract)``, built once
per process, never per sample). A sample that fails to read or transform does not stop anything: that modality is
marked invalid for the sample and the error is returned with the batch so the trainer can count and report it.

A batch (see :meth:`ManifestDataset.collate`) is a dict::

    {"inputs": {m: Tensor (n_m, ...)},   # only the rows where valid[m] is True, in batch order
     "valid":  {m: BoolTensor (B,)},     # per-sample validity, for every modality this step covers
     "index":  LongTensor (B,), "ids": [str] * B, "labels": [str | None] * B,
     "errors": [(sample id, modality, message)], "modalities": (m, ...)}

Compact ``inputs`` keep missing modalities from costing any compute; ``valid`` places each row back in the batch.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..errors import InputError
from ..modality import get_modality
from .manifest import Manifest

log = logging.getLogger(__name__)

Item = tuple[int, tuple[str, ...], tuple[str, ...]]


class ManifestDataset(Dataset):
    """A manifest viewed through the input contracts of the model's encoders.

    ``contracts``: modality -> input contract (``model.input_contract(m)``); modalities not in ``contracts`` are
    never loaded. ``skip_errors=False`` raises on the first bad sample instead of skipping it.
    """

    def __init__(self, manifest: Manifest, contracts: Mapping[str, dict], *, skip_errors: bool = True):
        self.manifest = manifest
        self.contracts = {m: dict(c) for m, c in contracts.items()}
        self.skip_errors = skip_errors
        self._transforms: dict[str, Callable[[Any], torch.Tensor]] = {}
        self._cache: dict[tuple[int, str], torch.Tensor] | None = None
        self.embedded: set[str] = set()  # modalities whose cache holds embeddings (trainer.cache_frozen)
        for m in self.contracts:  # built now: forked DataLoader workers share them (a tokenizer is built once)
            self.transform(m)

    def __len__(self) -> int:
        return len(self.manifest)

    def transform(self, modality: str) -> Callable[[Any], torch.Tensor]:
        fn = self._transforms.get(modality)
        if fn is None:  # a worker started by pickling (not forking) builds its own, once
            fn = self._transforms[modality] = prepared_transform(get_modality(modality), self.contracts[modality])
        return fn

    def __getstate__(self):  # transforms are rebuilt in each worker rather than pickled
        state = dict(self.__dict__)
        state["_transforms"] = {}
        return state

    def load(self, index: int, modality: str) -> torch.Tensor:
        """One sample's tensor for ``modality``; raises :class:`InputError` naming the file and the problem."""
        if self._cache is not None and (index, modality) in self._cache:
            return self._cache[(index, modality)]
        sample = self.manifest[index]
        if modality not in sample.items:
            raise InputError(f"sample {sample.id!r}", modality, "the manifest gives no value for this modality")
        if modality in self.embedded:  # only preloaded samples were embedded; this one failed to preload
            raise InputError(sample.items[modality], modality, "could not be preloaded, so the frozen tower's "
                             "cached embedding (trainer.cache_frozen) does not exist for it")
        spec, fn = get_modality(modality), self.transform(modality)
        raw, source = spec.load(sample.items[modality], **reader_options(fn))
        return apply_transform(fn, raw, source, modality)

    @property
    def cache(self) -> dict[tuple[int, str], torch.Tensor] | None:
        """The preloaded tensors (:meth:`preload`), keyed by ``(sample index, modality)``; ``None`` before a preload.
        Samples sharing a value share one tensor; a modality served as embeddings (:meth:`use_embeddings`) holds
        ``(D,)`` rows."""
        return self._cache

    def available(self, index: int) -> tuple[str, ...]:
        return tuple(m for m in self.manifest[index].items if m in self.contracts)

    def __getitem__(self, item: int | Item) -> dict:
        if isinstance(item, tuple):
            index, mods, step = item
        else:
            index = int(item)
            mods = step = self.available(index)
        sample = self.manifest[index]
        row = {"index": index, "id": sample.id, "label": sample.label, "inputs": {}, "errors": [], "step": tuple(step)}
        for m in mods:
            try:
                row["inputs"][m] = self.load(index, m)
            except Exception as exc:  # noqa: BLE001 - one bad file must never end a long run
                if not self.skip_errors:
                    raise
                msg = str(exc) if isinstance(exc, InputError) else f"{m} sample {sample.id!r}: {type(exc).__name__}: {exc}"
                row["errors"].append((sample.id, m, msg))
        return row

    def collate(self, rows: Sequence[dict]) -> dict:
        """Rows -> one batch (see the module docstring). Runs in the DataLoader workers."""
        step = rows[0]["step"] if rows else ()
        mods = tuple(dict.fromkeys([*step, *(m for r in rows for m in r["inputs"])]))
        valid = {m: torch.tensor([m in r["inputs"] for r in rows], dtype=torch.bool) for m in mods}
        inputs = {}
        for m in mods:
            items = [r["inputs"][m] for r in rows if m in r["inputs"]]
            if items:
                inputs[m] = torch.stack(items) if m in getattr(self, "embedded", ()) else get_modality(m).collate_fn(items)
        return {
            "inputs": inputs,
            "valid": valid,
            "index": torch.tensor([r["index"] for r in rows], dtype=torch.long),
            "ids": [r["id"] for r in rows],
            "labels": [r["label"] for r in rows],
            "errors": [e for r in rows for e in r["errors"]],
            "modalities": mods,
        }

    def preload(self, *, num_workers: int = 0, batch_size: int = 32, progress: bool = False) -> int:
        """Transform every (sample, modality) once and keep the tensors in memory; returns how many failed.

        For small datasets with deterministic transforms (all built-in ones are): later epochs skip decoding.
        A value that several samples share (the same file or text in many rows) is transformed once and its
        tensor shared. Failures are not cached, so they are still counted and reported during training.
        """
        first: dict[tuple[str, str], int] = {}  # (modality, value) -> the first sample holding it
        items: list[Item] = []
        for i, s in enumerate(self.manifest):
            new = tuple(m for m in s.items if m in self.contracts and first.setdefault((m, s.items[m]), i) == i)
            if new:
                items.append((i, new, new))
        loader = DataLoader(self, batch_size=batch_size, sampler=items, num_workers=num_workers, collate_fn=list,
                            worker_init_fn=worker_init if num_workers else None)
        failed = 0
        it = loader
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(loader, desc="preload", unit="batch", leave=False)
        loaded: dict[tuple[str, str], torch.Tensor] = {}
        for rows in it:
            for r in rows:
                failed += len(r["errors"])
                for m, x in r["inputs"].items():
                    # a tensor from a worker lives in shared memory that holds a file descriptor open for as long
                    # as the tensor lives: tens of thousands of cached samples would exhaust `ulimit -n`
                    loaded[(m, self.manifest[r["index"]].items[m])] = x.clone() if x.is_shared() else x
        cache: dict[tuple[int, str], torch.Tensor] = {}
        for i, s in enumerate(self.manifest):
            for m in s.items:
                x = loaded.get((m, s.items[m]))
                if x is not None:
                    cache[(i, m)] = x
        self._cache = cache
        return failed

    def use_embeddings(self, modality: str, embeddings: Mapping[tuple[int, str], torch.Tensor]) -> None:
        """Serve ``modality`` as precomputed ``(D,)`` embeddings (keyed like the preload cache) instead of its
        transformed tensors: batches then hold ``(n, D)`` rows for it (see :mod:`anybind.train.frozen_cache`)."""
        if self._cache is None:
            raise ValueError(f"use_embeddings({modality!r}) needs a preloaded dataset")
        for key in [k for k in self._cache if k[1] == modality]:
            del self._cache[key]
        self._cache.update(embeddings)
        self.embedded.add(modality)


class ItemDataset(Dataset):
    """Raw user items of one modality -> transformed tensors (runs in DataLoader workers).

    An item is ``(index, tensor, None)``. With ``skip_errors`` a bad item yields ``(index, None, error message)``
    instead of raising, so long runs continue and report what they skipped. With ``timed`` every item also carries
    the seconds it spent being read (decoded) and transformed, and every batch their sums:
    ``{"read": s, "transform": s}``.
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
            x = apply_transform(self._transform, raw, source, self.modality.name)
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
        """Items -> ``(indices, batch or None, [(index, message)])`` (and the timings when ``timed``)."""
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


def apply_transform(fn: Callable[[Any], torch.Tensor], raw: Any, source: str, modality: str) -> torch.Tensor:
    """``fn(raw)``; any failure becomes an :class:`InputError` naming ``source`` (the file, or a description of
    in-memory input): transforms see decoded data only, so their own errors cannot name the file."""
    try:
        return fn(raw)
    except InputError as err:
        if err.source.startswith("<") and err.source != source:
            raise InputError(source, modality, err.problem) from err
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin transform's own error, wrapped so the file is named
        raise InputError(source, modality, f"transform failed ({type(exc).__name__}: {exc})") from exc


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one intra-op thread each (workers run in parallel; more threads only contend), deaf to
    Ctrl-C and SIGTERM: the main process decides when to stop (after a checkpoint) and then stops them."""
    import signal

    torch.set_num_threads(1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.excepthook = _quiet_when_the_parent_hangs_up


def _quiet_when_the_parent_hangs_up(kind, value, tb) -> None:
    """A worker's file-descriptor sharer thread reports through ``sys.excepthook`` when the main process stops it
    in the middle of handing over a batch (Ctrl-C): that broken connection is the stop itself, not an error to
    print. Every other exception is reported as usual."""
    if issubclass(kind, (ConnectionError, EOFError)):
        return
    sys.__excepthook__(kind, value, tb)
