"""Batch samplers for binding modality pairs: which samples form each step's batch, on each rank.

Two strategies (``data.batching`` in the training config):

* ``mixed``: every sample that completes at least one trained pair (e.g. it has the image and the audio) is
  visited once per epoch in a seeded random order; each row loads every trained modality it has, and the loss
  masks pairs a row lacks. One image forward pass serves all pairs of a row: the cheapest choice when samples
  carry several modalities.
* ``pair``: each step draws one pair with probability proportional to its sampling weight and a batch of samples
  that have both of its modalities. Pairs backed by very different amounts of data (10k image-text, 500
  image-points) are seen at the rate you choose, not at the rate of their data.

Both are deterministic functions of ``(seed, epoch)``: every rank computes the same global batches and takes its
own contiguous slice, and a resumed run restarts an epoch at batch ``start`` with exactly the batches it would
have seen. Batches are always full (the last partial global batch of an epoch is dropped).
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch

from .dataset import Item


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class EpochBatchSampler:
    """Base: yields this rank's batches of one epoch, from batch ``start`` (see :meth:`set_epoch`)."""

    def __init__(self, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def global_batches(self, epoch: int) -> list[list[Item]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[Item]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches(self.epoch)[self.start:]:
            yield batch[lo:hi]

    def __len__(self) -> int:
        raise NotImplementedError


class MixedBatchSampler(EpochBatchSampler):
    """``row_modalities[i]``: the modalities sample ``i`` loads (empty: not used); ``modalities``: all trained."""

    def __init__(self, row_modalities: Sequence[tuple[str, ...]], modalities: Sequence[str], batch_size: int, **kw):
        super().__init__(batch_size, **kw)
        self.rows = [(i, tuple(m)) for i, m in enumerate(row_modalities) if m]
        self.modalities = tuple(modalities)
        if len(self.rows) < self.global_batch:
            raise ValueError(
                f"only {len(self.rows)} samples complete a trained pair, fewer than one global batch of "
                f"{self.global_batch}; lower data.batch_size or add data"
            )

    def __len__(self) -> int:
        return len(self.rows) // self.global_batch

    def global_batches(self, epoch: int) -> list[list[Item]]:
        order = torch.randperm(len(self.rows), generator=_generator(self.seed, epoch)).tolist()
        gb = self.global_batch
        return [
            [(self.rows[j][0], self.rows[j][1], self.modalities) for j in order[k * gb:(k + 1) * gb]]
            for k in range(len(self))
        ]


class PairBatchSampler(EpochBatchSampler):
    """``pools``: pair name -> (its two modalities, sample indices having both); ``weights``: pair -> weight.

    An epoch has ``steps_per_epoch`` steps (default: as many global batches as the pools hold together). Each
    pair's samples are consumed in a seeded random order, reshuffled when fewer than a global batch remain.
    """

    def __init__(
        self,
        pools: Mapping[str, tuple[tuple[str, str], Sequence[int]]],
        weights: Mapping[str, float],
        batch_size: int,
        *,
        steps_per_epoch: int | None = None,
        **kw,
    ):
        super().__init__(batch_size, **kw)
        self.names = list(pools)
        self.pools = {n: (tuple(mods), list(idx)) for n, (mods, idx) in pools.items()}
        for n, (mods, idx) in self.pools.items():
            if len(idx) < self.global_batch:
                raise ValueError(
                    f"pair {n} has {len(idx)} samples with both {mods[0]} and {mods[1]}, fewer than one global batch "
                    f"of {self.global_batch}; lower data.batch_size, add data, or drop the pair"
                )
        w = torch.tensor([float(weights.get(n, 1.0)) for n in self.names], dtype=torch.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"pair sampling weights must be >= 0 with a positive sum, got {dict(zip(self.names, w.tolist()))}")
        self.weights = w / w.sum()
        self.steps = steps_per_epoch or max(1, sum(len(i) for _, i in self.pools.values()) // self.global_batch)

    def __len__(self) -> int:
        return self.steps

    def global_batches(self, epoch: int) -> list[list[Item]]:
        g = _generator(self.seed, epoch)
        cursors = {n: [] for n in self.names}
        picks = torch.multinomial(self.weights, self.steps, replacement=True, generator=g).tolist()
        out = []
        for p in picks:
            name = self.names[p]
            mods, idx = self.pools[name]
            stream = cursors[name]
            if len(stream) < self.global_batch:  # drop the remainder: a batch never holds a sample twice
                stream = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            take, cursors[name] = stream[:self.global_batch], stream[self.global_batch:]
            out.append([(i, mods, mods) for i in take])
        return out
