"""The HTTP API on a small five-modality index: search (JSON, multipart, weighted, by id), items, previews, info."""

from __future__ import annotations

import io
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

import anybind
from anybind.retrieval import search as library_search


def ids(hits):
    return [(h["id"], h["modality"]) for h in hits]


def same_as_library(got: list[dict], want) -> None:
    assert ids(got) == [(h.id, h.modality) for h in want]
    np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-5)


def test_text_search_equals_the_library_search(client, collection):
    r = client.post("/search", json={"queries": [{"text": "a red thing"}], "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    want = library_search(collection.model, collection.index, [("text", "a red thing")], k=7)
    same_as_library(body["hits"], want)
    hit = body["hits"][0]
    assert set(hit) >= {"item", "id", "modality", "score", "metadata", "media", "preview"}
    assert hit["item"] == f"{hit['modality']}:{hit['id']}" and hit["media"] == "/items/" + quote(hit["item"], safe="")
    assert all("source" not in h and not str(h.get("name", "")).startswith("/") for h in body["hits"])  # no server paths


def test_weighted_text_plus_item_query_with_a_modality_filter(client, collection):
    red = str(collection.root / "img" / "red-0.png")
    r = client.post("/search", json={"queries": [{"text": "on grass", "weight": 0.5}, {"id": "image:red-0"}],
                                     "k": 4, "modalities": ["image", "audio"]})
    assert r.status_code == 200, r.text
    want = library_search(collection.model, collection.index, [("text", "on grass"), ("image", red)], weights=[0.5, 1],
                          k=4, modalities=["image", "audio"])
    same_as_library(r.json()["hits"], want)
    assert {h["modality"] for h in r.json()["hits"]} <= {"image", "audio"}


def test_more_like_this_by_item_key_and_an_ambiguous_bare_id(client):
    r = client.post("/search", json={"queries": [{"id": "v1"}], "k": 3})  # "v1" is both a video and a text: ambiguous
    assert r.status_code == 404 and "video:v1" in r.json()["detail"] and "text:v1" in r.json()["detail"]
    r = client.post("/search", json={"queries": [{"id": "video:v1"}], "k": 3})
    assert r.status_code == 200
    top = r.json()["hits"][0]
    assert top["item"] == "video:v1" and top["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("modality, rel", [("audio", "wav/green-1.wav"), ("image", "img/blue-0.png"),
                                           ("points", "pts/red-0.npy"), ("video", "vid/v0.mp4")])
def test_uploaded_file_search_equals_the_library_search(client, collection, modality, rel):
    path = collection.root / rel
    r = client.post("/search", files={"file": (path.name, path.read_bytes())}, data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queries"] == [{"kind": "file", "weight": 1.0, "modality": modality, "name": path.name}]
    same_as_library(body["hits"], library_search(collection.model, collection.index, [(modality, str(path))], k=5))
    assert body["hits"][0]["item"] == f"{modality}:{path.stem}"  # it finds itself


def test_multipart_upload_plus_text_with_weights_and_filter(client, collection):
    wav = collection.root / "wav" / "red-1.wav"
    queries = '[{"file": 0, "weight": 1}, {"text": "a blue thing", "weight": 0.25}]'
    r = client.post("/search", files={"file": ("q.wav", wav.read_bytes())},
                    data={"queries": queries, "k": "3", "modalities": "image"})
    assert r.status_code == 200, r.text
    want = library_search(collection.model, collection.index, [("audio", str(wav)), ("text", "a blue thing")],
                          weights=[1, 0.25], k=3, modalities=["image"])
    same_as_library(r.json()["hits"], want)


def test_items_stream_only_indexed_media(client, collection):
    png = collection.root / "img" / "green-1.png"
    r = client.get("/items/" + quote("image:green-1", safe=""))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png.read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    r = client.get("/items/audio:red-0", headers={"Range": "bytes=0-99"})  # players seek with ranges
    assert r.status_code == 206 and len(r.content) == 100
    r = client.get("/items/text:blue-1")
    assert r.status_code == 200 and r.text == "a blue thing number 1" and r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("item, media", [("image:red-0", "image/jpeg"), ("video:v0", "image/jpeg"),
                                         ("audio:blue-0", "image/png"), ("points:green-0", "image/png"),
                                         ("text:red-1", "image/png")])
def test_previews_of_every_modality_are_images_and_cached(client, item, media):
    svc = client.app.state.service
    r = client.get(f"/items/{item}/preview")
    assert r.status_code == 200 and r.headers["content-type"] == media
    img = Image.open(io.BytesIO(r.content))
    assert max(img.size) <= svc.settings.preview_size and min(img.size) > 8
    hits = svc.previews.hits
    assert client.get(f"/items/{item}/preview").content == r.content
    assert svc.previews.hits == hits + 1


def test_preview_cache_on_disk(tmp_path):
    from anybind.serve.previews import JPEG, PreviewCache

    cache = PreviewCache(tmp_path / "previews", max_items=1)
    cache.put("a", (b"1", JPEG))
    cache.put("b", (b"22", JPEG))  # evicts "a" from memory; the disk keeps both
    assert len(cache) == 1 and cache.get("a") == (b"1", JPEG)
    assert PreviewCache(tmp_path / "previews").get("b") == (b"22", JPEG)  # a restarted service reuses them
    assert cache.get("c") is None


def test_info_health_docs_and_page(client, collection):
    info = client.get("/info").json()
    assert info["index"]["count"] == len(collection.index)
    assert {m: p["count"] for m, p in info["index"]["modalities"].items()} == \
        {m: len(p) for m, p in collection.index.parts.items()}
    assert info["model"]["embed_dim"] == collection.model.embed_dim
    assert set(info["model"]["towers"]) == set(collection.model.modalities)
    assert ".wav" in info["uploads"]["accepted"]["audio"] and info["token_required"] is False
    assert client.get("/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/search", "/items/{item}", "/items/{item}/preview", "/info", "/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/search"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")  # the API page renders /openapi.json itself: nothing from a CDN
    assert docs.status_code == 200 and 'fetch("openapi.json")' in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text
    assert client.get("/redoc").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "<title>anybind search</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained: no CDN
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_import_anybind_does_not_import_fastapi():
    import subprocess
    import sys

    code = "import sys, anybind, anybind.serve; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert anybind.__name__ == "anybind"
