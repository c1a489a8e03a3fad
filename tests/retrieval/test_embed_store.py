"""embed_to_store: manifests and folders, bad files skipped and listed, resume, float16, store checks, merge."""

import json

import numpy as np
import pytest
import torch
from retrieval_assets import make_collection, tiny_model, write_image, write_wav

from anybind.errors import CheckpointError
from anybind.retrieval import EmbeddingStore, embed_to_store, merge_stores, write_store
from anybind.retrieval import embed as embed_mod


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("data"))


def test_manifest_is_embedded_like_model_embed(model, manifest, tmp_path):
    summary = embed_to_store(model, manifest, tmp_path / "store", shard_size=4, batch_size=3, progress=False)
    store = EmbeddingStore.open(tmp_path / "store")
    assert store.modality_counts() == {"image": 6, "text": 7, "audio": 6, "points": 3}
    assert summary.embedded == 22 and summary.failed == 1
    # the broken image is skipped, counted and listed with its file
    errors = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["id"] == "broken" and "broken.png" in errors[0]["error"]
    assert "broken.png" in summary.describe()
    # vectors equal what model.embed gives for the same inputs, rows in manifest order with their metadata
    rows = store.metadata(["audio"])
    assert [r["id"] for r in rows] == [f"{c}-{j}" for c in ("red", "green", "blue") for j in range(2)]
    assert rows[0]["label"] == "red" and rows[0]["split"] == "test"
    want = model.embed({"audio": [r["source"] for r in rows]}, progress=False)["audio"].numpy()
    np.testing.assert_allclose(store.vectors(["audio"]), want, atol=1e-5)
    text_rows = store.metadata(["text"])
    assert text_rows[0]["source"] == "a red thing number 0"
    assert np.allclose(np.linalg.norm(store.vectors(), axis=1), 1, atol=1e-5)
    assert len(store.shards) == 2 + 2 + 2 + 1  # image 7 planned -> 2 shards of <=4, text 2, audio 2, points 1


def test_resume_skips_finished_shards_and_redoes_damaged_or_missing(model, manifest, tmp_path, monkeypatch):
    out = tmp_path / "store"
    embed_to_store(model, manifest, out, shard_size=4, progress=False)
    before = EmbeddingStore.open(out).vectors()
    shards = sorted((out / "shards").glob("*.done.json"))
    shards[1].unlink()  # an interrupted run: one shard never got its marker
    damaged = json.loads(shards[2].read_text())["files"]["vectors"]["name"]
    (out / "shards" / damaged).write_bytes(b"garbage")

    calls = []
    real = embed_mod.embed_shards
    monkeypatch.setattr(embed_mod, "embed_shards", lambda model, m, todo, *a, **kw: (
        calls.append([t[0] for t in todo]), real(model, m, todo, *a, **kw)))
    summary = embed_to_store(model, manifest, out, shard_size=4, progress=False)
    redone = sorted(n for names in calls for n in names)
    assert redone == sorted([shards[1].name.removesuffix(".done.json"), shards[2].name.removesuffix(".done.json")])
    assert summary.shards_written == 2 and summary.shards_reused == len(shards) - 2
    np.testing.assert_allclose(EmbeddingStore.open(out).vectors(), before, atol=1e-6)
    # a third run has nothing to do
    calls.clear()
    summary = embed_to_store(model, manifest, out, shard_size=4, progress=False)
    assert calls == [] and summary.embedded == 0 and summary.reused + summary.reused_failed == 23
    # what the rerun reports is what the store holds (22 vectors, 1 input that failed)
    assert summary.reused == len(summary.store) == 22 and summary.reused_failed == len(summary.store.errors) == 1


def test_resume_with_other_inputs_or_model_refuses(model, manifest, tmp_path):
    out = tmp_path / "store"
    embed_to_store(model, manifest, out, shard_size=4, progress=False)
    with pytest.raises(CheckpointError, match="other inputs"):
        embed_to_store(model, manifest, out, shard_size=3, progress=False)
    with pytest.raises(CheckpointError, match="another model"):
        embed_to_store(tiny_model(("image", "text")), manifest, out, progress=False)
    summary = embed_to_store(model, manifest, out, shard_size=3, overwrite=True, progress=False)
    assert summary.shards_reused == 0 and len(summary.store) == 22


def test_folder_with_inferred_modalities_float16_and_workers(model, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    write_image(folder / "a.png", (200, 10, 10))
    write_image(folder / "sub" / "b.png", (10, 10, 200))
    write_wav(folder / "c.wav", 440)
    (folder / "notes.md").write_text("not a modality")
    (folder / "d.txt").write_text("a text file")
    (folder / "e.webm").write_bytes(b"\x00")  # video: the model has no video tower
    summary = embed_to_store(model, folder, tmp_path / "store", dtype="float16", num_workers=2, progress=False)
    store = summary.store
    assert store.modality_counts() == {"image": 2, "audio": 1, "text": 1}
    assert sorted(r["id"] for r in store.metadata()) == ["a.png", "c.wav", "d.txt", "sub/b.png"]
    assert np.load(store.shards[0].vectors_path).dtype == np.float16
    assert summary.ignored == {"files of no known modality (.md 1)": 1, "items of modalities the model lacks (video)": 1}
    want = model.embed({"image": [str(folder / "a.png")]}, progress=False)["image"].numpy()
    np.testing.assert_allclose(store.vectors(["image"])[:1], want, atol=2e-3)


def test_forced_modality_and_item_lists(model, tmp_path):
    items = [{"source": "a small red square", "modality": "text", "id": "t0", "tag": 7}, {"source": torch.rand(3, 20, 20),
                                                                                           "modality": "image"}]
    store = embed_to_store(model, items, tmp_path / "s", progress=False).store
    meta = store.metadata()
    assert [m["modality"] for m in meta] == ["text", "image"] and meta[0]["tag"] == 7 and meta[1]["source"] is None


def test_damaged_store_is_detected_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    write_store(tmp_path / "s", x, [{"id": str(i), "modality": "image"} for i in range(10)], shard_size=4)
    f = sorted((tmp_path / "s" / "shards").glob("*.jsonl"))[1]
    f.write_text(f.read_text().replace('"5"', '"X"'))
    with pytest.raises(CheckpointError, match=f.name):
        EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(CheckpointError, match="store.json"):
        EmbeddingStore.open(tmp_path)


def test_merge_stores(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)
    write_store(tmp_path / "a", a, [{"id": f"a{i}", "modality": "image"} for i in range(5)], shard_size=2)
    write_store(tmp_path / "b", b, [{"id": f"b{i}", "modality": "audio"} for i in range(3)], dtype="float16")
    merged = merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    again = EmbeddingStore.open(tmp_path / "m")
    assert len(again) == 8 and again.modality_counts() == {"image": 5, "audio": 3}
    assert [r["id"] for r in again.metadata()] == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)]
    np.testing.assert_allclose(merged.vectors()[:5], a)
    np.testing.assert_allclose(merged.vectors()[5:], b, atol=1e-2)
    write_store(tmp_path / "c", np.zeros((2, 4), np.float32), [{"id": "c", "modality": "image"}] * 2)
    with pytest.raises(CheckpointError, match="widths"):
        merge_stores([tmp_path / "a", tmp_path / "c"], tmp_path / "m2")
    write_store(tmp_path / "d", a, [{"id": "d", "modality": "image"}] * 5, model={"sha256": "f" * 64})
    write_store(tmp_path / "e", a, [{"id": "e", "modality": "image"}] * 5, model={"sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="different models"):
        merge_stores([tmp_path / "d", tmp_path / "e"], tmp_path / "m3")


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo root


@pytest.mark.shared_data
def test_real_folder_of_ogg_clips_and_attribution_texts(model, tmp_path):
    folder = SHARED / "audio_clips"
    if not folder.is_dir():
        pytest.skip("../shared/data/audio_clips is missing")
    oggs = sorted(folder.glob("*.ogg"))
    from anybind.retrieval import build_index, items_from_folder, search

    # each .txt beside a clip is its attribution (a sidecar): skipped and counted, unless asked for
    items, ignored = items_from_folder(folder)
    txts = sorted(folder.glob("*.txt"))
    assert [it["modality"] for it in items] == ["audio"] * len(oggs)
    assert ignored == {embed_mod.SIDECAR_REASON: len(txts)}
    with_text, ignored = items_from_folder(folder, text_sidecars=True)
    assert sorted(it["modality"] for it in with_text) == sorted(["audio"] * len(oggs) + ["text"] * len(txts))
    assert ignored == {}
    few = items[:3] + [it for it in with_text if it["modality"] == "text"][:2]
    summary = embed_to_store(model, few, tmp_path / "store", batch_size=4, progress=False)
    assert summary.store.modality_counts() == {"audio": 3, "text": 2}
    assert summary.failed == 0 and np.isfinite(summary.store.vectors()).all()
    hits = search(model, build_index(summary.store), {"audio": str(oggs[0])}, k=1, modalities=["audio"])
    assert hits[0].id == oggs[0].name and hits[0].source == str(oggs[0]) and hits[0].score == pytest.approx(1.0, abs=1e-4)
