"""Manifest training data with augmentations (:mod:`anybind.data.augment`), seeded per (epoch, sample).

The batch sampler's items gain the epoch (``(index, modalities, step, epoch)``), so each worker seeds a sample's
draws from the run's seed, the epoch and the sample: a resumed run repeats the uninterrupted one exactly.
Preloading (``data.preload``) caches the un-augmented tensors; the draws are applied on top each time.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from .augment import make_augments, sample_generator
from .dataset import ManifestDataset


class EpochTaggedSampler:
    """A batch sampler whose items carry the epoch; ``set_epoch`` / ``len`` pass through."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __getattr__(self, name: str) -> Any:
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(*item, epoch) for item in batch]


class AugmentedManifestDataset(ManifestDataset):
    """A :class:`ManifestDataset` that augments the tensors of items tagged with an epoch."""

    specs: dict
    seed: int

    def __getitem__(self, item):
        if not (isinstance(item, tuple) and len(item) == 4):
            return super().__getitem__(item)
        index, mods, step, epoch = item
        row = super().__getitem__((index, mods, step))
        augs = self.__dict__.get("_augments")
        if augs is None:  # built in each worker
            augs = self._augments = make_augments(self.specs, self.contracts)
        for m, x in row["inputs"].items():
            if m in augs:
                row["inputs"][m] = augs[m](x, sample_generator(self.seed, epoch, index, m))
        return row

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_augments", None)
        return state


def augment_manifest_data(dataset: ManifestDataset, sampler, specs: Mapping[str, Mapping], seed: int):
    """``(dataset, sampler)`` with ``specs`` ({modality: augment params}) applied; the inputs are not copied."""
    make_augments(specs, dataset.contracts)  # unknown keys fail now, not in a worker
    aug = AugmentedManifestDataset.__new__(AugmentedManifestDataset)
    aug.__dict__.update(dataset.__dict__)
    aug.specs, aug.seed = {m: dict(p) for m, p in specs.items()}, int(seed)
    return aug, EpochTaggedSampler(sampler)
