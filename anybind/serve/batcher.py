"""Cross-request micro-batching: queries that arrive together share one call.

Concurrent requests each submit one item (a text to embed, a decoded upload, a query vector); a
:class:`MicroBatcher` collects the items with the same key (a modality, or an index search's ``(modalities, k)``)
that arrive within a short window, runs them as one batch in its worker thread, and hands each caller its own row.
While a batch runs, new items queue up, so under load batches fill by themselves; the window only costs latency
when the service is idle.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable, Hashable, Sequence

BatchFn = Callable[[Hashable, list], Sequence[Any]]


class MicroBatcher:
    """Groups items submitted by concurrent callers into calls of ``run(key, items) -> results``.

    ``run`` returns one result per item, in order; an exception instance in a slot is raised to that item's caller
    only (one bad upload does not fail the others of its batch). An exception raised by ``run`` itself goes to every
    caller of the batch. A caller cancelled before its batch starts (a request that timed out) is dropped from the
    batch, so no work is spent on it. ``stats[key]`` counts calls and items, which makes the batching checkable.
    """

    def __init__(self, run: BatchFn, executor: Executor, *, window: float = 0.005, max_batch: int = 32):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window < 0:
            raise ValueError(f"the batching window must be >= 0 seconds, got {window}")
        self.run, self.executor = run, executor
        self.window, self.max_batch = float(window), int(max_batch)
        self.stats: dict[Hashable, dict[str, int]] = {}
        self._queues: dict[Hashable, asyncio.Queue] = {}
        self._consumers: dict[Hashable, asyncio.Task] = {}
        self._closed = False

    async def submit(self, key: Hashable, item: Any) -> Any:
        """The result of ``item`` (run in a batch with whatever else arrives for ``key`` meanwhile)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._consumers[key] = loop.create_task(self._consume(key, queue), name=f"batcher {key}")
        future = loop.create_future()
        queue.put_nowait((item, future))
        return await future  # cancelling the caller cancels the future: its batch skips it

    async def _consume(self, key: Hashable, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            if self.window and queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.window)  # let the other requests of this moment join
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # callers that gave up meanwhile
            if not batch:
                continue
            stats = self.stats.setdefault(key, {"calls": 0, "items": 0})
            stats["calls"] += 1
            stats["items"] += len(batch)
            try:
                results = await loop.run_in_executor(self.executor, self.run, key, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                results = [exc] * len(batch)
            for (_, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    async def close(self) -> None:
        self._closed = True
        for task in self._consumers.values():
            task.cancel()
        for task in self._consumers.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for queue in self._queues.values():
            while not queue.empty():
                _, fut = queue.get_nowait()
                if not fut.done():
                    fut.cancel()
        self._consumers.clear()
        self._queues.clear()
