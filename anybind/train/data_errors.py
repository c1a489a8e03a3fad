"""The bad samples a training run skipped: how often, which ones, and why (``data_errors`` in metrics.json).

A loader batch carries ``errors``: ``(sample id, modality, message)`` for every input that could not be read or
decoded (a missing or undecodable file; for shards also ``modality == "shard"``: a damaged tar whose sample could
not be read). :class:`SkippedSamples` counts them and reports, in the log and in ``metrics.json``::

    "data_errors": {"skipped": 4,            # occurrences (a bad sample met in two epochs counts twice)
                    "samples": 2,            # distinct bad samples
                    "ids": {"s005": ["image"], "s008": ["points"]},   # id -> its failing modalities
                    "examples": [{"id": ..., "modality": ..., "error": ...}, ...]}   # the first messages

Occurrences are summed over ranks; the distinct ids are merged over ranks (at most ``MAX_IDS`` are listed, the
count stays exact). The whole record travels in checkpoints, so a resumed run reports the run as a whole.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

from .. import dist

log = logging.getLogger("anybind.train")

MAX_ERROR_EXAMPLES = 20  # full messages kept (each one logged once)
MAX_IDS = 1000  # distinct bad sample ids listed


class SkippedSamples:
    """Counts and lists a run's bad samples; ``note`` each batch's errors, ``report`` at log/eval time."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[dict] = []
        self.ids: dict[str, set[str]] = {}
        self.more_ids = 0  # distinct bad samples beyond MAX_IDS (counted, not listed)

    def note(self, errors: Iterable[tuple[str, str, str]]) -> None:
        for sid, m, msg in errors:
            self.count += 1
            sid = str(sid)
            if sid in self.ids:
                self.ids[sid].add(m)
            elif len(self.ids) < MAX_IDS:
                self.ids[sid] = {m}
            else:
                self.more_ids += 1
            if len(self.examples) < MAX_ERROR_EXAMPLES:
                self.examples.append({"id": sid, "modality": m, "error": msg})
                log.warning("skipped a bad sample (%s, %s): %s", sid, m, msg)

    def global_count(self, device: torch.device | str = "cpu") -> int:
        """Occurrences over all ranks (a collective: every rank calls it)."""
        t = torch.tensor([float(self.count)], device=device)
        return int(dist.all_reduce_sum(t).item())

    def _global_ids(self) -> tuple[dict[str, set[str]], int]:
        if dist.world_size() <= 1:
            return self.ids, self.more_ids
        parts: list = [None] * dist.world_size()
        torch.distributed.all_gather_object(parts, (self.ids, self.more_ids))
        ids: dict[str, set[str]] = {}
        more = 0
        for part_ids, part_more in parts:
            more += part_more
            for sid, mods in part_ids.items():
                ids.setdefault(sid, set()).update(mods)
        return ids, more

    def report(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """``metrics.json``'s ``data_errors`` (a collective: every rank calls it; rank 0's copy is the one kept)."""
        count = self.global_count(device)
        ids, more = self._global_ids()
        return {"skipped": count, "samples": len(ids) + more,
                "ids": {sid: sorted(mods) for sid, mods in sorted(ids.items())}, "examples": list(self.examples)}

    def log_summary(self, report: dict[str, Any]) -> None:
        if report["skipped"]:
            listed = ", ".join(f"{sid} ({'/'.join(mods)})" for sid, mods in report["ids"].items())
            log.warning("%d bad inputs skipped in %d distinct samples: %s", report["skipped"], report["samples"],
                        listed if len(listed) < 4000 else listed[:4000] + " ...")

    # ------------------------------------------------------------------------------------------ checkpoints
    def state(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """What a checkpoint keeps (a collective): the global record, restored on rank 0 at resume."""
        r = self.report(device)
        return {"count": r["skipped"], "examples": r["examples"], "ids": r["ids"],
                "more_ids": r["samples"] - len(r["ids"])}

    def load(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        if not dist.is_main():  # the global record lives on rank 0 (sums over ranks stay right)
            state = {}
        self.count = int(state.get("count", 0))
        self.examples = list(state.get("examples", []))
        self.ids = {sid: set(mods) for sid, mods in (state.get("ids") or {}).items()}
        self.more_ids = int(state.get("more_ids", 0))
