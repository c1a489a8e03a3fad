"""The skipped-sample record: occurrences vs distinct ids, the id cap, and the checkpoint round trip."""

from __future__ import annotations

import json

from anybind.train import data_errors
from anybind.train.data_errors import SkippedSamples


def test_counts_occurrences_lists_distinct_ids_and_survives_a_checkpoint():
    s = SkippedSamples()
    s.note([("s1", "image", "bad png"), ("s2", "points", "bad npy")])
    s.note([("s1", "image", "bad png"), ("s1", "audio", "bad wav")])  # s1 met again (next epoch), and its audio
    r = s.report()
    assert r["skipped"] == 4 and r["samples"] == 2
    assert r["ids"] == {"s1": ["audio", "image"], "s2": ["points"]}
    assert [e["id"] for e in r["examples"]] == ["s1", "s2", "s1", "s1"]
    state = json.loads(json.dumps(s.state()))  # what a checkpoint's state.json keeps
    resumed = SkippedSamples()
    resumed.load(state)
    resumed.note([("s3", "text", "bad utf-8")])
    r2 = resumed.report()
    assert r2["skipped"] == 5 and r2["samples"] == 3 and set(r2["ids"]) == {"s1", "s2", "s3"}
    old = SkippedSamples()
    old.load({"count": 7, "examples": []})  # a checkpoint written before ids were kept
    assert old.report()["skipped"] == 7 and old.report()["ids"] == {}


def test_ids_beyond_the_cap_are_counted_not_listed(monkeypatch):
    monkeypatch.setattr(data_errors, "MAX_IDS", 3)
    s = SkippedSamples()
    s.note([(f"s{i}", "image", "bad") for i in range(5)])
    r = s.report()
    assert r["samples"] == 5 and len(r["ids"]) == 3 and r["skipped"] == 5
    resumed = SkippedSamples()
    resumed.load(json.loads(json.dumps(s.state())))
    assert resumed.report()["samples"] == 5
