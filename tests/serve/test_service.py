"""SearchService without HTTP: item names, "more like this" vectors from every index kind."""

from __future__ import annotations

import numpy as np
import pytest

from anybind.retrieval import IndexParams, build_index
from anybind.serve.service import RequestError, SearchService


@pytest.mark.parametrize("kind, refine", [("flat", None), ("hnsw", None), ("ivfpq", True), ("ivfpq", False)])
def test_item_vector_from_every_index_kind(collection, kind, refine):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    vecs = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 32))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    meta = [{"id": f"n{i}", "modality": "image" if i % 3 else "audio", "source": None} for i in range(2000)]
    index = build_index(vecs, meta, kind=kind, params=IndexParams(refine=refine, ef_search=32, nprobe=8))
    svc = SearchService(index, collection.model)
    for i in (0, 17, 1999):
        row = svc.resolve(f"n{i}")  # unique bare ids resolve without the modality
        assert row == svc.resolve(f"{meta[i]['modality']}:n{i}") == i
        v = svc.item_vector(row)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
        cos = float(v @ vecs[i])
        assert cos > (0.999 if kind != "ivfpq" or refine else 0.8), (kind, refine, cos)


def test_unknown_names_and_model_mismatch(collection):
    svc = SearchService(collection.index, collection.model)
    with pytest.raises(RequestError, match="no item 'image:missing'") as err:
        svc.resolve("image:missing")
    assert err.value.status == 404
    with pytest.raises(RequestError, match=r"shared by several items \(audio:red-0, image:red-0, points:red-0, text:red-0\)"):
        svc.resolve("red-0")
    assert svc.key(svc.resolve("image:red-0")) == "image:red-0"
    assert svc.upload_modality("x.FLAC") == ("audio", ".flac")
    with pytest.raises(RequestError, match="not accepted") as err:
        svc.upload_modality("x.svg")
    assert err.value.status == 415

    import anybind

    other = anybind.create_model({"text": {"name": "text_transformer_test", "embed_dim": 16}})
    with pytest.raises(ValueError, match="16 dims but the index holds 32"):
        SearchService(collection.index, other)
