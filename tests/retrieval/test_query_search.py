"""Search by every modality, weighted query arithmetic, target modalities, the search CLI and contact sheets."""

import json

import numpy as np
import pytest
from PIL import Image
from retrieval_assets import make_collection_with_videos, tiny_model

from anybind.retrieval import (Index, as_queries, build_index, combine, contact_sheet, embed_to_store, parse_query,
                               search)
from anybind.errors import UsageError
from anybind.retrieval.cli import run_search


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("coll")
    manifest = make_collection_with_videos(root)
    model = tiny_model(("image", "text", "audio", "points", "video"))
    store = embed_to_store(model, manifest, root / "store", progress=False).store
    index = build_index(store, kind="flat")
    index.save(root / "index")
    return model, store, index, root


def brute(store, q, k, modalities=None):
    vecs, meta = store.vectors(modalities), store.metadata(modalities)
    order = np.argsort(-(vecs @ q), kind="stable")[:k]
    return [(meta[i]["id"], meta[i]["modality"]) for i in order], (vecs @ q)[order]


@pytest.mark.parametrize("modality", ["image", "text", "audio", "points", "video"])
def test_search_by_each_modality_finds_itself_and_matches_brute_force(setup, modality):
    model, store, index, _ = setup
    row = store.metadata([modality])[0]
    hits = search(model, index, {modality: row["source"]}, k=5, modalities=[modality])
    assert (hits[0].id, hits[0].modality) == (row["id"], modality) and hits[0].score == pytest.approx(1.0, abs=1e-4)
    q = model.embed({modality: [row["source"]]}, progress=False)[modality][0].numpy()
    want, scores = brute(store, q, 8)
    got = search(model, index, [(modality, row["source"])], k=8)
    assert [(h.id, h.modality) for h in got] == want
    np.testing.assert_allclose([h.score for h in got], scores, atol=1e-5)


def test_weighted_arithmetic_query_is_the_renormalized_weighted_sum(setup):
    model, store, index, root = setup
    img, text = str(root / "img" / "red-0.png"), "on grass"
    e = model.embed({"image": [img], "text": [text]}, progress=False)
    q = e["image"][0].numpy() + 0.5 * e["text"][0].numpy()
    q /= np.linalg.norm(q)
    want, scores = brute(store, q, 6, ["image", "audio"])
    hits = search(model, index, [("image", img), ("text", text)], weights=[1, 0.5], k=6, modalities=["image", "audio"])
    assert [(h.id, h.modality) for h in hits] == want
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
    # the weights matter: text alone ranks differently from the image-dominated mixture
    text_only = search(model, index, [("image", img), ("text", text)], weights=[0, 1], k=6, modalities=["image", "audio"])
    assert [h.id for h in text_only] == [m for m, _ in brute(store, e["text"][0].numpy(), 6, ["image", "audio"])[0]]


def test_combine_checks_weights():
    v = np.eye(3, dtype=np.float32)[:2]
    np.testing.assert_allclose(combine(v, [3, 4]), [0.6, 0.8, 0], atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        combine(v, [1])
    with pytest.raises(ValueError, match="cancel"):
        combine(np.stack([v[0], v[0]]), [1, -1])


def test_query_parsing(tmp_path):
    f = tmp_path / "x.wav"
    f.write_bytes(b"")
    assert parse_query("image:cat.png") == ("image", "cat.png")
    assert parse_query(str(f)) == ("audio", str(f))
    assert parse_query("a cat: on grass") == ("text", "a cat: on grass")
    assert parse_query("text:on grass") == ("text", "on grass")
    assert as_queries({"image": "a.png", "text": "b"}) == [("image", "a.png"), ("text", "b")]


def test_search_cli_json_and_contact_sheet(setup, tmp_path, capsys):
    model, store, index, root = setup
    out = run_search(["--index", str(root / "index"), "--encoders", "image=image_vit_test", "--query",
                      f"image:{root / 'img' / 'blue-1.png'}", "-k", "4", "--target", "image", "--target", "video",
                      "--sheet", str(tmp_path / "sheet.png"), "--json", str(tmp_path / "hits.json")])
    saved = json.loads((tmp_path / "hits.json").read_text())
    assert saved["hits"] == out["hits"] and len(out["hits"]) == 4
    assert {h["modality"] for h in out["hits"]} <= {"image", "video"}
    assert [h["score"] for h in out["hits"]] == sorted((h["score"] for h in out["hits"]), reverse=True)
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.width == 4 * 160 and sheet.height > 160
    # a random model from registry names is not the one that built the index: scores differ from the stored ones,
    # but the search itself ran; with no model at all the CLI refuses
    with pytest.raises(UsageError, match="checkpoint"):
        run_search(["--index", str(root / "index"), "--query", "text:red"])
    # a store can be searched directly (indexed in memory); JSON goes to stdout
    capsys.readouterr()
    run_search(["--index", str(root / "store"), "--encoders", "text=text_transformer_test", "-q", "text:a red thing",
                "-q", "text:a blue thing", "-w", "1", "-w", "0.25", "-k", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["weights"] == [1.0, 0.25] and printed["mode"] == "cross-modal"
    # no --target: the top 3 of every modality but the query's own (text)
    assert {m: len(v) for m, v in printed["by_modality"].items()} == {"image": 3, "audio": 3, "points": 3, "video": 2}
    assert "text" not in {h["modality"] for h in printed["hits"]} and "text" in printed["note"]


def test_contact_sheet_shows_video_middle_frame_and_text_cards(setup, tmp_path):
    model, store, index, root = setup
    hits = index.search(store.vectors(["video"])[1], k=1, modalities=["video"])[0]
    hits += index.search(store.vectors(["text"])[0], k=1, modalities=["text"])[0]
    path = contact_sheet(hits, tmp_path / "s.png", tile=64, columns=2)
    arr = np.asarray(Image.open(path).convert("L"), dtype=float)
    # v1.mp4 has 8 frames of grey levels 200 + 10 i (mod 256); the tile stacks frames 1, 4 and 6 (at 1/6, 1/2, 5/6)
    slot = (64 - 4) // 3
    for k, level in enumerate((210, 240, 4)):
        mid = 2 + k * slot + slot // 2
        assert abs(arr[mid - 3:mid + 3, 24:40].mean() - level) < 12, (k, arr[mid - 3:mid + 3, 24:40].mean())
    assert arr[:64, 64:].std() > 5  # the text card has drawn text on white


def test_saved_index_records_the_store_model(setup):
    _, store, _, root = setup
    loaded = Index.load(root / "index")
    assert loaded.model["encoders"]["image"] == "image_vit_test" and loaded.info["stores"] == [str(store.path.resolve())]
