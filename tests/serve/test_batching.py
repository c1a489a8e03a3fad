"""Cross-request batching: concurrent requests share tower calls, and get exactly the unbatched results."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from anybind.retrieval import search as library_search
from anybind.serve import ServeSettings, create_app
from anybind.serve.batcher import MicroBatcher


async def _concurrently(app, requests):
    """Run ``requests`` (kwargs of ``client.post("/search", ...)``) at once against ``app`` (lifespan included)."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            return await asyncio.gather(*(client.post("/search", **kw) for kw in requests))


def _same(got: dict, want) -> None:
    assert [(h["id"], h["modality"]) for h in got["hits"]] == [(h.id, h.modality) for h in want]
    np.testing.assert_allclose([h["score"] for h in got["hits"]], [h.score for h in want], atol=1e-5)


def test_concurrent_text_queries_share_tower_calls_and_equal_unbatched_results(collection):
    texts = [f"a {c} thing number {i}" for c in ("red", "green", "blue") for i in range(4)]
    app = create_app(collection.index, collection.model, ServeSettings(decode_workers=0, batch_window_ms=20))
    responses = asyncio.run(_concurrently(app, [{"json": {"queries": [{"text": t}], "k": 6}} for t in texts]))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    stats = app.state.service.stats()
    assert stats["tower_calls"]["text"]["items"] == len(texts)
    assert stats["tower_calls"]["text"]["calls"] < len(texts) // 2, stats  # 12 requests, a few tower calls
    assert stats["index_calls"]["all k=6"]["calls"] < len(texts), stats  # the index searches batched too
    for t, r in zip(texts, responses):
        _same(r.json(), library_search(collection.model, collection.index, [("text", t)], k=6))


def test_concurrent_uploads_share_tower_calls_and_equal_unbatched_results(collection):
    wavs = sorted((collection.root / "wav").glob("*.wav"))
    app = create_app(collection.index, collection.model, ServeSettings(decode_workers=0, batch_window_ms=50))
    requests = [{"files": {"file": (p.name, p.read_bytes())}, "data": {"k": "5", "modalities": "image,points"}}
                for p in wavs]
    responses = asyncio.run(_concurrently(app, requests))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    calls = app.state.service.stats()["tower_calls"]["audio"]
    assert calls["items"] == len(wavs) and calls["calls"] < len(wavs), calls
    for p, r in zip(wavs, responses):
        _same(r.json(), library_search(collection.model, collection.index, [("audio", str(p))], k=5,
                                       modalities=["image", "points"]))


def test_one_bad_item_fails_only_its_own_caller():
    from concurrent.futures import ThreadPoolExecutor

    def run(key, items):
        return [ValueError(f"bad {x}") if x < 0 else x * 10 for x in items]

    async def main():
        b = MicroBatcher(run, ThreadPoolExecutor(1), window=0.02, max_batch=8)
        results = await asyncio.gather(*(b.submit("k", x) for x in (1, -2, 3)), return_exceptions=True)
        await b.close()
        return results, b.stats

    results, stats = asyncio.run(main())
    assert results[0] == 10 and results[2] == 30 and isinstance(results[1], ValueError) and "bad -2" in str(results[1])
    assert stats == {"k": {"calls": 1, "items": 3}}


def test_a_caller_cancelled_before_its_batch_runs_is_dropped():
    from concurrent.futures import ThreadPoolExecutor

    seen = []

    def run(key, items):
        seen.append(list(items))
        return items

    async def main():
        b = MicroBatcher(run, ThreadPoolExecutor(1), window=0.05, max_batch=8)
        keep = asyncio.ensure_future(b.submit("k", "keep"))
        gone = asyncio.ensure_future(b.submit("k", "gone"))
        await asyncio.sleep(0.01)  # both queued, the window still open
        gone.cancel()
        assert await keep == "keep"
        await b.close()
        return gone.cancelled()

    assert asyncio.run(main())
    assert seen == [["keep"]]  # no work was spent on the request that gave up


def test_batching_limits_are_checked():
    from concurrent.futures import ThreadPoolExecutor

    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda k, i: i, ThreadPoolExecutor(1), max_batch=0)
