"""What an embedding run did and what its store holds: :class:`EmbedSummary`, printed by ``anybind-embed``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import EmbeddingStore


@dataclass
class EmbedSummary:
    """What one :func:`~anybind.retrieval.embed.embed_to_store` run did, and what the store holds after it."""

    store: EmbeddingStore
    planned: int = 0
    embedded: int = 0
    failed: int = 0
    reused: int = 0  # vectors of shards (and parts) finished by an earlier run
    reused_failed: int = 0  # inputs those shards had recorded as failed
    shards_written: int = 0
    shards_reused: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    embedded_by_modality: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # seconds in read / transform / tower (all processes)
    interrupted: bool = False
    precision: str = "fp32"
    workers: int = 0

    @property
    def errors(self) -> list[dict]:
        return self.store.errors

    @property
    def done(self) -> int:
        """Planned inputs that are finished (embedded or recorded as failed), by this run or an earlier one."""
        return self.embedded + self.failed + self.reused + self.reused_failed

    def shares(self) -> dict[str, float]:
        """The share of time in reading (decoding) files, transforming them and running the tower."""
        total = sum(self.timing.get(k, 0.0) for k in ("read", "transform", "tower"))
        return {k: self.timing.get(k, 0.0) / total for k in ("read", "transform", "tower")} if total > 0 else {}

    def describe(self) -> str:
        store = self.store
        counts = store.modality_counts()
        errs = self.errors
        lines = [f"store {store.path}: {_n(len(store), 'vector')} in {_n(len(store.shards), 'shard')} "
                 f"({', '.join(f'{m} {n}' for m, n in counts.items()) or 'empty'}), "
                 f"{_n(len(errs), 'input')} failed"]
        by_mod = ", ".join(f"{m} {n}" for m, n in self.embedded_by_modality.items() if n) or "nothing"
        rate = f", {self.embedded / self.seconds:.0f} items/s" if self.seconds > 0 and self.embedded else ""
        shares = self.shares()
        where = (" (" + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + " of the work)") if shares else ""
        secs = f"{self.seconds:.2f}" if self.seconds < 10 else f"{self.seconds:.1f}"  # a short run still shows its time
        lines.append(f"this run: embedded {by_mod} ({_n(self.embedded, 'item')}, {self.failed} failed) in "
                     f"{_n(self.shards_written, 'shard')}, {secs} s{rate}{where}; {self.precision}, "
                     f"{_n(self.workers, 'worker')}")
        if self.shards_reused:
            lines.append(f"reused from an earlier run: {_n(self.shards_reused, 'finished shard')} "
                         f"({_n(self.reused, 'vector')}, {_n(self.reused_failed, 'failed input')})")
        if self.ignored:
            lines.append("skipped: " + "; ".join(f"{n} {why}" for why, n in self.ignored.items()))  # why: plural
        if errs:
            lines.append(f"{_n(len(errs), 'input')} could not be embedded (listed in {store.path / 'errors.jsonl'}):")
            lines += [f"  {e['error']}" for e in errs[:10]]
            if len(errs) > 10:
                lines.append(f"  ... and {len(errs) - 10} more")
        return "\n".join(lines)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
