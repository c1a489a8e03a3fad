"""Hostile and broken requests: each gets a 4xx with a clear body, and the service stays healthy.

Malformed bodies and queries, uploads that are too large, of the wrong type or undecodable (the message is the
one InputError gives), unknown and path-like item ids, decodes and searches past their time limits (the work is
killed, not left running).
"""

from __future__ import annotations

import struct
import time
import zlib

import pytest
from fastapi.testclient import TestClient

from anybind.errors import InputError
from anybind.serve import ServeSettings, create_app
from anybind.serve.decode import decode_item


def assert_error(r, status: int, *fragments: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    for f in fragments:
        assert f in body["detail"], (f, body["detail"])
    return body


def assert_healthy(client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    r = client.post("/search", json={"queries": [{"text": "still there?"}], "k": 2})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kwargs, status, fragment", [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"json": ["a list"]}, 400, "must be a JSON object"),
    ({"json": {"k": 3}}, 400, "'queries' must be a non-empty list"),
    ({"json": {"queries": []}}, 400, "'queries' must be a non-empty list"),
    ({"json": {"queries": ["image:/etc/passwd"]}}, 400, "query 0 must be an object"),
    ({"json": {"queries": [{"text": "a", "id": "image:red-0"}]}}, 400, "exactly one of"),
    ({"json": {"queries": [{"path": "/etc/passwd"}]}}, 400, "unknown field(s) ['path']"),
    ({"json": {"queries": [{"text": "a", "weight": "heavy"}]}}, 400, "weight must be a finite number"),
    ({"json": {"queries": [{"text": "   "}]}}, 400, "non-empty string"),
    ({"json": {"queries": [{"text": "a"}, {"text": "a", "weight": -1}]}}, 400, "cancel out"),
    ({"json": {"queries": [{"text": "a"}], "k": 0}}, 400, "k must be an integer from 1 to"),
    ({"json": {"queries": [{"text": "a"}], "k": "many"}}, 400, "k must be an integer"),
    ({"json": {"queries": [{"text": "a"}], "modalities": ["smell"]}}, 400, "holds no 'smell' items"),
    ({"json": {"queries": [{"text": "a"}], "extra": 1}}, 400, "unknown field(s) ['extra']"),
    ({"json": {"queries": [{"file": 0}]}}, 400, "need a multipart request"),
    ({"json": {"queries": [{"text": "x" * 20000}]}}, 413, "over the limit of 16384"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "application/json or multipart/form-data"),
])
def test_malformed_search_requests(client, kwargs, status, fragment):
    assert_error(client.post("/search", **kwargs), status, fragment)
    assert_healthy(client)


def test_uploads_of_the_wrong_type_or_shape(client, collection):
    wav = (collection.root / "wav" / "red-0.wav").read_bytes()
    assert_error(client.post("/search", files={"file": ("tool.exe", b"MZ\x90\x00")}), 415,
                 "'tool.exe'", "'.exe' is not accepted", ".wav")
    assert_error(client.post("/search", files={"file": ("noext", wav)}), 415, "(no extension)")
    assert_error(client.post("/search", files={"upload": ("a.wav", wav)}), 400, "field 'file'")
    assert_error(client.post("/search", files={"file": ("a.wav", wav)}, data={"queries": '[{"file": 3}]'}), 400,
                 "names no uploaded file")
    assert_error(client.post("/search", files={"file": ("a.wav", wav)}, data={"queries": '[{"text": "x"}]'}), 400,
                 "'a.wav' (file 0) is not used")
    assert_error(client.post("/search", files={"file": ("a.wav", wav)}, data={"queries": "[{"}), 400,
                 "'queries' is not valid JSON")
    assert_error(client.post("/search", files={"file": ("a.wav", wav)},
                             data={"queries": '[{"file": 0, "modality": "image"}]'}), 415, "not a image file type")
    assert_healthy(client)


@pytest.mark.parametrize("name, data, modality", [
    ("broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8, "audio"),
    ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image"),
    ("bomb.png", png_bomb(), "image"),
    ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, "video"),
    ("broken.npy", b"\x93NUMPY garbage", "points"),
    ("empty.wav", b"", "audio"),
])
def test_undecodable_uploads_get_the_input_error_message(client, tmp_path, name, data, modality):
    r = client.post("/search", files={"file": (name, data)})
    body = assert_error(r, 422, f"{modality} input '{name}'")
    assert body["error"] == "InputError"
    assert "/tmp" not in body["detail"] and "anybind-serve-uploads" not in body["detail"]  # never the server's path
    if data:  # the same message the library gives for the same bytes (with the file's own name)
        local = tmp_path / name
        local.write_bytes(data)
        with pytest.raises(InputError) as err:
            decode_item(modality, str(local), client.app.state.service.model.input_contract(modality))
        assert body["detail"] == str(InputError(name, modality, err.value.problem.replace(str(local), name)))
    assert_healthy(client)


@pytest.mark.parametrize("path", [
    "/items/..%2F..%2Fetc%2Fpasswd", "/items/../../etc/passwd", "/items/%2Fetc%2Fpasswd", "/items/image:..%2F..%2Fetc%2Fpasswd",
    "/items/image:..%2F..%2Fetc%2Fpasswd/preview", "/items/image:nope", "/items/nope/preview", "/items/",
])
def test_unknown_and_path_like_item_ids(client, path):
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert "root:" not in r.text
    if r.headers.get("content-type", "").startswith("application/json"):
        assert r.json()["detail"]
    if "%2F" in path:  # reached the lookup: refused by name, no file was ever opened
        assert r.status_code == 404 and "no item" in r.json()["detail"] and "passwd" in r.json()["detail"]
    assert_healthy(client)


def test_path_like_ids_and_names_in_searches(client, collection):
    assert_error(client.post("/search", json={"queries": [{"id": "../../etc/passwd"}]}), 404, "no item '../../etc/passwd'")
    assert_error(client.post("/search", json={"queries": [{"id": "image:/etc/passwd"}]}), 404, "no item")
    wav = (collection.root / "wav" / "red-0.wav").read_bytes()
    r = client.post("/search", files={"file": ("../../etc/passwd.wav", wav)}, data={"k": "1"})
    assert r.status_code == 200 and r.json()["queries"][0]["name"] == "passwd.wav"  # stored under a name of our own
    assert not list(client.app.state.service._upload_dir.iterdir())  # and removed after the request
    assert_healthy(client)


def test_size_limits(collection):
    settings = ServeSettings(max_upload_bytes=64 << 10, max_body_bytes=256 << 10, decode_workers=0, max_queries=3, max_k=50)
    app = create_app(collection.index, collection.model, settings)
    with TestClient(app) as client:
        assert_error(client.post("/search", files={"file": ("big.wav", b"\0" * (100 << 10))}), 413,
                     "'big.wav' is over the limit of 65536 bytes")
        assert_error(client.post("/search", files={"file": ("huge.wav", b"\0" * (300 << 10))}), 413,
                     "over the limit of 262144 bytes")

        def chunks():  # no content-length: the limit holds while the body streams in
            for _ in range(40):
                yield b"\0" * (16 << 10)

        assert_error(client.post("/search", content=chunks(), headers={"content-type": "application/json"}), 413,
                     "over the limit of 262144 bytes")
        assert_error(client.post("/search", json={"queries": [{"text": "a"}] * 4}), 400, "4 queries, over the limit of 3")
        assert_error(client.post("/search", json={"queries": [{"text": "a"}], "k": 51}), 400, "from 1 to 50")
        assert_healthy(client)


def test_decode_past_its_time_limit_kills_the_worker(collection, tmp_path):
    import numpy as np
    import soundfile as sf
    from slow_reader import SLOW_RATE

    slow, fine = tmp_path / "slow.wav", collection.root / "wav" / "blue-1.wav"
    sf.write(slow, np.zeros(SLOW_RATE // 2, np.float32), SLOW_RATE)
    settings = ServeSettings(decode_workers=1, decode_timeout=1.0, decode_imports=("slow_reader",))
    app = create_app(collection.index, collection.model, settings)
    with TestClient(app) as client:
        svc = app.state.service
        (first,) = svc.decoder._all
        t0 = time.perf_counter()
        assert_error(client.post("/search", files={"file": ("slow.wav", slow.read_bytes())}), 422,
                     "audio input 'slow.wav': decoding took longer than the decode time limit of 1 s")
        assert time.perf_counter() - t0 < 8
        assert first.proc.wait(timeout=5) == -9 and svc.decoder.killed == 1  # its work was killed, not left running
        assert client.get("/health").json()["status"] == "ok"
        client.portal.call(svc.decoder.wait_ready)
        assert svc.decoder.alive() == 1
        assert client.post("/search", files={"file": ("ok.wav", fine.read_bytes())}).status_code == 200

        settings.decode_timeout, settings.request_timeout = 60.0, 1.0  # now the whole request runs out first
        (second,) = svc.decoder._all
        assert_error(client.post("/search", files={"file": ("slow.wav", slow.read_bytes())}), 504,
                     "request time limit of 1 s", "cancelled")
        assert second.proc.wait(timeout=5) == -9 and svc.decoder.killed == 2
        assert svc.stats()["pending"] == 0
        assert_healthy(client)


def test_bearer_token(collection):
    app = create_app(collection.index, collection.model, ServeSettings(decode_workers=0), token="s3cret")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
        for method, path, kw in (("get", "/info", {}), ("post", "/search", {"json": {"queries": [{"text": "a"}]}}),
                                 ("get", "/items/image:red-0", {}), ("get", "/items/image:nope/preview", {})):
            r = getattr(client, method)(path, **kw)
            assert_error(r, 401, "needs a token")  # before any lookup: an unknown item is not told apart
            assert r.headers["www-authenticate"] == "Bearer"
            assert_error(getattr(client, method)(path, headers={"Authorization": "Bearer wrong"}, **kw), 401, "wrong token")
        good = {"Authorization": "Bearer s3cret"}
        assert client.get("/info", headers=good).json()["token_required"] is True
        assert client.post("/search", json={"queries": [{"text": "a"}]}, headers=good).status_code == 200
        assert client.get("/items/image:red-0", headers=good).status_code == 200
        client.cookies.set("anybind_token", "s3cret")  # what the page sets, so that <img src> works
        assert client.get("/items/image:red-0/preview").status_code == 200
