"""Training batches streamed from shards (or a mixture of shard sets and manifests): :class:`ShardStream`.

Per epoch, each (rank, DataLoader worker) *slot* reads its own units (``units[slot::slots]`` of a seeded
permutation, so no sample is read twice in an epoch while every slot has data), shuffles samples through a seeded
buffer, groups them into batches and decodes them **in the worker** with the readers and transforms a manifest
uses (:class:`~anybind.data.dataset.ManifestDataset` gives the same tensors for the same sample). Batches have the
manifest path's shape (inputs, per-modality ``valid`` masks, ids, errors), so the trainer cannot tell them apart.

* Epoch length: every rank yields ``len(stream)`` batches, ``samples // (batch_size * world)``, so DDP ranks
  stay in step. A slot whose units run out before its quota starts a fresh pass over them.
* Seeds: the unit order comes from ``(seed, epoch, pass)``, each slot's buffer from ``(seed, epoch, rank,
  worker)``: an epoch is the same on every run with the same world size and workers.
* Resume: ``set_epoch(epoch, start)`` skips the first ``start`` batches of the epoch without decoding them (the
  skipped samples are still read and shuffled, so the buffer's state matches); the remaining batches are exactly
  those the interrupted run had left, in the same order, as long as the world size, ``num_workers``, batch size
  and shard set are unchanged.
* ``resampled=True``: units are drawn with replacement (an endless stream; ``len`` still defines an epoch).
* Mixtures: several sources with weights; each sample is drawn from a source chosen by weight.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ...errors import InputError
from ...modality import get_modality
from ..augment import make_augments, sample_generator
from .sources import Source


def _gen(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def shuffled(samples: Iterator[dict], size: int, g: torch.Generator) -> Iterator[dict]:
    """A seeded shuffle buffer of ``size`` samples (``size <= 1``: the stream order)."""
    if size <= 1:
        yield from samples
        return
    buf: list[dict] = []
    for x in samples:
        if len(buf) < size:
            buf.append(x)
            continue
        j = int(torch.randint(len(buf), (1,), generator=g))
        buf[j], x = x, buf[j]
        yield x
    while buf:
        yield buf.pop(int(torch.randint(len(buf), (1,), generator=g)))


def fields(raw: Mapping[str, Any]) -> dict[str, str]:
    """modality -> member name of a raw sample (``"image.png"`` -> ``{"image": "image.png"}``)."""
    return {k.split(".", 1)[0]: k for k in raw if not k.startswith("__") and k != "json"}


class ShardStream(IterableDataset):
    """Batches of ``batch_size`` rows from ``sources`` for the modalities of ``pairs`` (mixed batching).

    ``contracts``: modality -> input contract (as for ``ManifestDataset``). A row loads the modalities of every
    pair it completes; rows completing none are skipped. Pass the DataLoader ``batch_size=None``.
    """

    def __init__(self, sources: Sequence[Source], contracts: Mapping[str, dict], pairs: Sequence[tuple[str, str]],
                 batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000,
                 resampled: bool = False, epoch_samples: int | None = None, skip_errors: bool = True,
                 augment: Mapping[str, Mapping] | None = None):
        if not sources:
            raise ValueError("no data source")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sources, self.pairs = list(sources), [tuple(p) for p in pairs]
        self.contracts = {m: dict(c) for m, c in contracts.items()}
        self.modalities = tuple(m for m in self.contracts if any(m in p for p in self.pairs))
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer, self.resampled, self.skip_errors = shuffle_buffer, resampled, skip_errors
        w = torch.tensor([s.weight for s in self.sources], dtype=torch.float64)
        if w.sum() <= 0:
            raise ValueError(f"mixture weights must have a positive sum, got {[s.weight for s in self.sources]}")
        self.weights = w / w.sum()
        self.samples = int(epoch_samples or sum(s.samples for s in self.sources))
        if self.samples < batch_size * world_size:
            raise ValueError(f"the data holds {self.samples} samples, fewer than one global batch of "
                             f"{batch_size * world_size}; lower data.batch_size or add data")
        self.augment = {m: dict(p) for m, p in (augment or {}).items() if p and m in self.modalities}
        make_augments(self.augment, self.contracts)  # unknown keys fail now, not in a worker
        self.epoch = self.start = 0
        self._augments: dict | None = None
        self._transforms: dict = {}
        self._tmp: str | None = None

    # ------------------------------------------------------------------------------------------- sampler API
    def __len__(self) -> int:
        return self.samples // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def check_workers(self, num_workers: int) -> None:
        """Fail now, clearly, when some (rank, worker) would get no shard: it would yield nothing and hang DDP."""
        slots = self.world_size * max(1, num_workers)
        for s in self.sources:
            if len(s.units) < slots and not self.resampled:
                kind = "shards" if s.manifest is None else "manifest samples"
                raise ValueError(f"data source {s.name!r} has {len(s.units)} {kind}, fewer than ranks x workers = "
                                 f"{self.world_size} x {max(1, num_workers)}: some would get no data. Write more, "
                                 f"smaller shards (anybind-shard max_count=...), lower data.num_workers, or set "
                                 f"data.resampled=true")

    def __getstate__(self):  # transforms are rebuilt in each worker rather than pickled
        return {**self.__dict__, "_transforms": {}, "_tmp": None, "_augments": None}

    # -------------------------------------------------------------------------------------------- iteration
    def _passes(self, src: Source, slot: int, slots: int, errors: list) -> Iterator[dict]:
        """This slot's samples of ``src``, pass after pass (each pass shuffled through the buffer)."""
        k = self.sources.index(src)
        for p in range(1 << 30):
            g = _gen(self.seed, self.epoch, k, p)
            if self.resampled:
                mine = torch.randint(len(src.units), (max(1, len(src.units) // slots),), generator=_gen(
                    self.seed, self.epoch, k, p, slot)).tolist()
            else:
                mine = torch.randperm(len(src.units), generator=g).tolist()[slot::slots]
            got = 0
            stream = (x for i in mine for x in src.read(src.units[i], lambda w, m, e: errors.append((w, m, e))))
            for x in shuffled(stream, self.shuffle_buffer, _gen(self.seed, self.epoch, k, p, slot, 7)):
                got += 1
                x["__source__"] = src.name
                yield x
            if not got:
                raise RuntimeError(f"data source {src.name!r}: slot {slot} of {slots} read no sample in a whole pass "
                                   f"({len(mine)} units; errors: {errors[-3:]})")

    def _raw(self, slot: int, slots: int, errors: list) -> Iterator[dict]:
        streams = [self._passes(s, slot, slots, errors) for s in self.sources]
        if len(streams) == 1:
            yield from streams[0]
            return
        g = _gen(self.seed, self.epoch, slot, 11)
        while True:
            picks = torch.multinomial(self.weights, 256, replacement=True, generator=g).tolist()
            for k in picks:
                yield next(streams[k])

    def _usable(self, raw: dict) -> tuple[str, ...]:
        have = fields(raw)
        return tuple(m for m in self.modalities if any(m in p and p[0] in have and p[1] in have for p in self.pairs))

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes batches from its workers in turn, starting at worker 0. Batch j of an epoch belongs
        # to virtual worker j % workers; resuming at batch `start`, DataLoader worker w plays virtual worker
        # (w + start) % workers, so the batches come in exactly the uninterrupted order.
        wid = (wid + self.start) % workers
        slot, slots = self.rank * workers + wid, self.world_size * workers
        total = len(self)
        quota = total // workers + (wid < total % workers)
        skip = max(0, -(-(self.start - wid) // workers))  # global batches j < start with j % workers == wid
        errors: list = []
        stream = (x for x in self._raw(slot, slots, errors) if self._usable(x))
        try:
            for b in range(min(quota, total)):
                raws = [next(stream) for _ in range(self.batch_size)]
                if b >= skip:
                    batch = self.decode_batch(raws)
                    batch["errors"] = [*((w, m, e) for w, m, e in errors), *batch["errors"]]
                    errors.clear()
                    yield batch
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    # --------------------------------------------------------------------------------------------- decoding
    def transform(self, modality: str):
        fn = self._transforms.get(modality)
        if fn is None:
            fn = self._transforms[modality] = get_modality(modality).make_transform(self.contracts[modality])
        return fn

    def _scratch(self) -> str:
        if self._tmp is None:
            base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            self._tmp = tempfile.mkdtemp(prefix="anybind-shards-", dir=base)
        return self._tmp

    def decode(self, raw: dict, modality: str, member: str) -> torch.Tensor:
        """One modality of a raw sample -> its tensor, through the modality's reader and transform."""
        spec, value = get_modality(modality), raw[member]
        where = f"{raw.get('__url__')}:{raw['__key__']}.{member}"
        if isinstance(value, Path):  # a manifest source: the file itself
            data, where = spec.read(value), str(value)
        elif spec.text_like:
            data = value.decode("utf-8")
        else:  # the original file's bytes: decoded by the reader from a scratch file with the same extension
            path = Path(self._scratch()) / f"{os.getpid()}-{raw['__key__'].replace('/', '_')}.{member}"
            path.write_bytes(value)
            try:
                data = spec.read(path)
                x = self.transform(modality)(data)
            except InputError as exc:
                raise InputError(where, modality, exc.problem) from None
            except Exception as exc:
                raise InputError(where, modality, f"transform failed ({type(exc).__name__}: {exc})") from exc
            finally:
                path.unlink(missing_ok=True)
            return x
        try:
            return self.transform(modality)(data)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(where, modality, f"transform failed ({type(exc).__name__}: {exc})") from exc

    def row(self, raw: dict) -> dict:
        meta = json.loads(raw["json"]) if "json" in raw else {}
        sid = str(meta.get("id", raw["__key__"]))
        key = raw["__key__"].rpartition("/")[2]
        out = {"index": int(key) if key.isdigit() else -1, "id": sid, "label": meta.get("label"), "inputs": {},
               "errors": [], "step": self.modalities, "source": raw.get("__source__")}
        have = fields(raw)
        for m in self._usable(raw):
            try:
                x = self.decode(raw, m, have[m])
                if m in self.augment:  # seeded per (epoch, sample): the same draws on every run and on resume
                    if self._augments is None:
                        self._augments = make_augments(self.augment, self.contracts)
                    x = self._augments[m](x, sample_generator(self.seed, self.epoch, raw.get("__url__"), raw["__key__"], m))
                out["inputs"][m] = x
            except Exception as exc:  # noqa: BLE001 - one bad sample never ends a run
                if not self.skip_errors:
                    raise
                msg = str(exc) if isinstance(exc, InputError) else f"{m} sample {sid!r}: {type(exc).__name__}: {exc}"
                out["errors"].append((sid, m, msg))
        return out

    def decode_batch(self, raws: Sequence[dict]) -> dict:
        from ..dataset import ManifestDataset

        rows = [self.row(r) for r in raws]
        batch = ManifestDataset.collate(self, rows)  # the manifest path's batch layout, from the same code
        batch["sources"] = [r["source"] for r in rows]
        return batch
