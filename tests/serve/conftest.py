"""A small index of five modalities with a tiny model, shared by the service tests."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent / "retrieval"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

pytest.importorskip("fastapi", reason="the service needs fastapi (pip install 'anybind[serve]')")
pytest.importorskip("multipart", reason="uploads need python-multipart (pip install 'anybind[serve]')")


def build_collection(root: Path):
    """image/text/audio/points items of three colour classes and two videos, embedded and indexed (flat)."""
    from retrieval_assets import make_collection_with_videos, tiny_model

    from anybind.retrieval import build_index, embed_to_store

    manifest = make_collection_with_videos(root)
    model = tiny_model(("image", "text", "audio", "points", "video"))
    store = embed_to_store(model, manifest, root / "store", progress=False).store
    index = build_index(store, kind="flat")
    index.save(root / "index")
    return SimpleNamespace(model=model, index=index, store=store, root=root)


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    return build_collection(tmp_path_factory.mktemp("serve_coll"))


@pytest.fixture(scope="session")
def client(collection):
    """A TestClient on the default settings (decode worker processes included)."""
    from fastapi.testclient import TestClient

    from anybind.serve import ServeSettings, create_app

    app = create_app(collection.index, collection.model, ServeSettings(decode_workers=1))
    with TestClient(app) as c:
        yield c


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(collection, tmp_path_factory):
    """``python -m anybind.serve`` (the CLI) on a free port over the saved index and the tiny model's checkpoint."""
    import os
    import subprocess
    import time
    import urllib.request

    import anybind

    ckpt = anybind.save_model(collection.root / "ckpt" / "model", collection.model)
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "anybind.serve", "--index", str(collection.root / "index"), "--checkpoint", str(ckpt),
           "--port", str(port), "--decode-workers", "1", "--log-level", "warning"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"anybind-serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"anybind-serve did not answer within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield SimpleNamespace(url=url, port=port, proc=proc, log=log, checkpoint=ckpt)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
