"""anybind.bench.openclip on a shipped small config: every contender embeds the same files to the same vectors."""

import pytest

from anybind.bench.openclip import captions, run

pytest.importorskip("open_clip")


@pytest.mark.slow
def test_openclip_throughput_suite_compares_equal_embeddings():
    result = run("ViT-S-32", images=4, texts=6, batch=2, workers=[0], repeats=1)
    paths = {(r["what"], r["path"]) for r in result["rows"]}
    assert paths == {("image", "open_clip loop"), ("image", "anybind embed"), ("image", "anybind-embed (store)"),
                     ("text", "open_clip loop"), ("text", "anybind embed")}
    for r in result["rows"]:
        assert r["per_s"] > 0 and r["max_abs_diff"] < 2e-4, r
    assert result["env"]["cpu_count"] >= 1 and len(captions(5)) == 5
