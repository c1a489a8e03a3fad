"""``anybind-serve`` / ``python -m anybind.serve``: a real uvicorn server, raw HTTP, and the CLI's error line."""

from __future__ import annotations

import http.client
import json

import pytest

from anybind.serve.cli import main


def raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A request whose path goes out exactly as written (no client-side ``..`` normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def test_served_by_the_cli(live_server, collection):
    status, ctype, body = raw(live_server, "GET", "/info")
    info = json.loads(body)
    assert status == 200 and info["model"]["checkpoint"] == str(live_server.checkpoint)
    assert info["model"]["sha256"] and info["index"]["count"] == len(collection.index)
    status, _, body = raw(live_server, "POST", "/search", json.dumps({"queries": [{"text": "a red thing"}], "k": 3}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200 and len(json.loads(body)["hits"]) == 3
    status, ctype, body = raw(live_server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"anybind" in body


@pytest.mark.parametrize("path", ["/items/../../etc/passwd", "/items/..%2F..%2Fetc%2Fpasswd", "/items//etc/passwd",
                                  "/items/image:../../../../etc/passwd/preview", "/../../etc/passwd"])
def test_raw_path_traversal_over_http(live_server, path):
    status, ctype, body = raw(live_server, "GET", path)
    assert 400 <= status < 500 and b"root:" not in body, (path, status, body[:200])
    if path.startswith("/items/"):
        assert status == 404 and b"no item" in body
    assert raw(live_server, "GET", "/health")[0] == 200


def test_cli_reports_a_user_error_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--index", str(tmp_path / "missing"), "--encoders", "text=text_transformer_test"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anybind-serve: ") and "does not exist" in err and "\n" not in err


def test_cli_refuses_a_model_of_another_width(collection, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--index", str(collection.root / "index"), "--encoders", "text=text_transformer_tiny"])
    assert exc.value.code == 2 and "embeds to 128 dims but index" in capsys.readouterr().err


def test_console_script_is_declared():
    import importlib
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    target = project["scripts"]["anybind-serve"]
    assert target == "anybind.cli:serve_main"
    module, _, func = target.partition(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert any(d.startswith("fastapi") for d in project["optional-dependencies"]["serve"])
