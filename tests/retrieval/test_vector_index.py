"""Index build, search, save/load, damage detection, add, modality restriction, PyTorch fallback."""

import numpy as np
import pytest

from anybind.errors import CheckpointError
from anybind.retrieval import Index, IndexParams, build_index, choose_kind, exact_topk, write_store
from anybind.retrieval.index import backend, policy


def unit(rng, n, d=32):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, n, d=32, centers=20, noise=0.6):
    c = unit(rng, centers, d)
    x = c[rng.integers(0, centers, n)] + noise * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def meta(n, modality="image", start=0):
    return [{"id": f"{modality}-{start + i}", "modality": modality, "source": f"/x/{modality}{start + i}.png"} for i in range(n)]


def brute(queries, vectors, k):
    s = queries @ vectors.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k], np.sort(s, axis=1)[:, ::-1][:, :k]


def recall(got, want):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)])


def test_flat_matches_brute_force():
    rng = np.random.default_rng(0)
    x, q = unit(rng, 500), unit(rng, 7)
    idx = build_index(x, meta(500), kind="flat")
    scores, rows = idx.search_arrays(q, k=10)
    want_rows, want_scores = brute(q, x, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    hits = idx.search(q[0], k=3)[0]
    assert [h.row for h in hits] == list(want_rows[0, :3])
    assert hits[0].id == f"image-{want_rows[0, 0]}" and hits[0].source.endswith(".png")


def test_exact_topk_streams_chunks_like_brute_force():
    rng = np.random.default_rng(1)
    x, q = unit(rng, 1000), unit(rng, 5)
    s, i = exact_topk(q, x, 12, chunk=97)
    want_rows, want_scores = brute(q, x, 12)
    np.testing.assert_array_equal(i, want_rows)
    np.testing.assert_allclose(s, want_scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_reach_target_recall(kind):
    rng = np.random.default_rng(2)
    both = clustered(rng, 4050)  # queries from the same clusters as the collection, not in it
    x, q = both[:4000], both[4000:]
    idx = build_index(x, meta(4000), kind=kind, params=IndexParams(target_recall=0.9, ivf_nlist=32, pq_m=8))
    part = idx.parts["image"]
    assert part.kind == kind and part.backend == "faiss"
    assert ("ef_search" if kind == "hnsw" else "nprobe") in part.settings
    _, rows = idx.search_arrays(q, k=10)
    assert recall(rows, brute(q, x, 10)[0]) >= 0.85


def test_ivfpq_settings_survive_save_and_load(tmp_path):
    x = clustered(np.random.default_rng(2), 3000)
    idx = build_index(x, meta(3000), kind="ivfpq", params=IndexParams(ivf_nlist=16, nprobe=3, refine=True, k_factor=5))
    idx.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    import faiss

    assert faiss.extract_index_ivf(loaded.parts["image"].impl).nprobe == 3 and loaded.parts["image"].impl.k_factor == 5
    q = x[:5] + 0.01
    np.testing.assert_array_equal(loaded.search_arrays(q, 10)[1], idx.search_arrays(q, 10)[1])


def test_auto_kind_follows_size_and_memory_budget():
    p = IndexParams(flat_max=1000)
    assert choose_kind(500, 64, 1 << 30, p) == ("flat", False)
    assert choose_kind(100_000, 64, 1 << 30, p) == ("hnsw", False)
    kind, refine = choose_kind(100_000, 64, 30 << 20, p)  # HNSW (~50 MB) does not fit, IVF-PQ + refine (~28 MB) does
    assert (kind, refine) == ("ivfpq", True)
    assert choose_kind(100_000, 64, 5 << 20, p) == ("ivfpq_disk", True)  # vectors on disk, codes in memory
    idx = build_index(unit(np.random.default_rng(0), 300), meta(300), kind="auto", params=IndexParams(flat_max=100),
                      memory_budget="1G")
    assert idx.parts["image"].kind == "hnsw"


def test_save_load_roundtrip_and_resave(tmp_path):
    rng = np.random.default_rng(4)
    x = unit(rng, 600)
    m = meta(400) + meta(200, "audio")
    idx = build_index(x, m, kind="hnsw", params=IndexParams(ef_search=64))
    q = unit(rng, 4)
    before = idx.search_arrays(q, k=5)
    idx.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    assert loaded.parts["image"].impl.hnsw.efSearch == 64
    after = loaded.search_arrays(q, k=5)
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.metadata[450]["modality"] == "audio"
    # saving again after an add replaces the files the manifest no longer lists
    loaded.add(unit(rng, 3), meta(3, "text"))
    loaded.save(tmp_path / "ix")
    again = Index.load(tmp_path / "ix")
    assert len(again) == 603 and again.modalities == ["image", "audio", "text"]
    listed = {p.name for p in (tmp_path / "ix").iterdir() if p.name != ".anybind.lock"}
    assert len(listed) == 1 + 1 + 2 * 3  # manifest, metadata, rows + data per part


@pytest.mark.parametrize("victim", ["data", "rows", "metadata"])
def test_damaged_index_is_detected_naming_the_file(tmp_path, victim):
    idx = build_index(unit(np.random.default_rng(5), 100), meta(100), kind="flat")
    idx.save(tmp_path / "ix")
    import json

    manifest = json.loads((tmp_path / "ix" / "index.json").read_text())
    entry = manifest["metadata"] if victim == "metadata" else manifest["parts"][0][victim]
    f = tmp_path / "ix" / entry["name"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=entry["name"]):
        Index.load(tmp_path / "ix")


def test_missing_index_file_and_manifest(tmp_path):
    idx = build_index(unit(np.random.default_rng(5), 50), meta(50), kind="flat")
    idx.save(tmp_path / "ix")
    with pytest.raises(CheckpointError, match="index.json"):
        Index.load(tmp_path)
    import json

    name = json.loads((tmp_path / "ix" / "index.json").read_text())["parts"][0]["data"]["name"]
    (tmp_path / "ix" / name).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        Index.load(tmp_path / "ix")


def test_modality_restriction_and_merge_of_parts():
    rng = np.random.default_rng(6)
    img, aud = unit(rng, 300), unit(rng, 200)
    idx = build_index(np.concatenate([img, aud]), meta(300) + meta(200, "audio"), kind="flat")
    q = unit(rng, 3)
    _, rows = idx.search_arrays(q, k=8, modalities=["audio"])
    want = brute(q, aud, 8)[0] + 300
    np.testing.assert_array_equal(rows, want)
    _, rows_all = idx.search_arrays(q, k=8)
    np.testing.assert_array_equal(rows_all, brute(q, np.concatenate([img, aud]), 8)[0])
    assert all(h.modality == "audio" for h in idx.search(q, k=8, modalities="audio")[0])
    with pytest.raises(ValueError, match="video"):
        idx.search(q, k=3, modalities=["video"])


def test_k_larger_than_collection_pads():
    idx = build_index(unit(np.random.default_rng(7), 4), meta(4), kind="flat")
    s, r = idx.search_arrays(unit(np.random.default_rng(8), 2), k=6)
    assert (r[:, 4:] == -1).all() and np.isneginf(s[:, 4:]).all()
    assert len(idx.search(unit(np.random.default_rng(8), 1), k=6)[0]) == 4


def test_add_to_index_equals_building_at_once():
    rng = np.random.default_rng(9)
    a, b = unit(rng, 200), unit(rng, 150)
    idx = build_index(a, meta(200), kind="flat")
    idx.add(b, meta(150, start=200))
    full = build_index(np.concatenate([a, b]), meta(350), kind="flat")
    q = unit(rng, 5)
    np.testing.assert_array_equal(idx.search_arrays(q, 10)[1], full.search_arrays(q, 10)[1])
    assert idx.metadata[349]["id"] == "image-349"


def test_build_from_stores_merges_them(tmp_path):
    rng = np.random.default_rng(10)
    a, b = unit(rng, 120), unit(rng, 80)
    s1 = write_store(tmp_path / "s1", a, meta(120), shard_size=50)
    s2 = write_store(tmp_path / "s2", b, meta(80, "text"))
    idx = build_index([s1, tmp_path / "s2"], kind="flat")
    assert len(idx) == 200 and idx.modalities == ["image", "text"]
    q = unit(rng, 2)
    np.testing.assert_array_equal(idx.search_arrays(q, 5, modalities=["text"])[1] - 120, brute(q, b, 5)[0])


def test_pytorch_path_when_faiss_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "import_faiss", lambda: None)
    rng = np.random.default_rng(11)
    x = unit(rng, 300)
    idx = build_index(x, meta(200) + meta(100, "audio"), kind="auto")
    assert {p.backend for p in idx.parts.values()} == {"torch"}
    q = unit(rng, 3)
    np.testing.assert_array_equal(idx.search_arrays(q, 7)[1], brute(q, x, 7)[0])
    idx.add(unit(rng, 5), meta(5, "audio", 100))
    idx.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.search_arrays(q, 7)[1], idx.search_arrays(q, 7)[1])
    with pytest.raises(ImportError, match="faiss"):
        build_index(x, meta(300), kind="hnsw")


def test_tuning_on_given_queries_covers_out_of_distribution_queries():
    rng = np.random.default_rng(12)
    x = clustered(rng, 3000)
    q = clustered(np.random.default_rng(13), 100)  # other cluster centres: like queries from another modality
    tune, test = q[:60], q[60:]
    idx = build_index(x, meta(3000), kind="hnsw", params=IndexParams(target_recall=0.95, tune_vectors=tune))
    assert idx.parts["image"].settings["tuned_recall"] >= 0.95
    _, rows = idx.search_arrays(test, k=10)
    assert recall(rows, brute(test, x, 10)[0]) >= 0.85


def test_auto_kind_at_benchmark_sizes(monkeypatch):
    """512-wide collections under the default budget (half of a 24 GB machine): HNSW up to hnsw_max, then IVF-PQ with
    exact re-ranking (the kind benchmarked at 1M in docs/benchmarks.md); without room for the vectors, no re-ranking."""
    monkeypatch.setattr(policy, "default_memory_budget", lambda: 12 << 30)
    assert choose_kind(5_000, 512) == ("flat", False)
    assert choose_kind(100_000, 512) == ("hnsw", False)
    assert choose_kind(1_000_000, 512) == ("ivfpq", True)
    assert choose_kind(1_000_000, 512, 1 << 30) == ("ivfpq_disk", True)  # 2 GB of vectors do not fit in 1 GB: on disk
    assert choose_kind(1_000_000, 512, 32 << 20) == ("ivfpq", False)  # not even room for ivfpq_disk's codes
    assert choose_kind(1_000_000, 512, params=IndexParams(hnsw_max=2_000_000)) == ("hnsw", False)
    assert policy.resolve_kind("auto", 1_000_000, 512, "12G", None) == ("ivfpq", True)


def test_tuned_ivfpq_reranking_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(14)
    both = clustered(rng, 6050, d=64, centers=30, noise=0.9)
    x, q = both[:6000], both[6000:]
    p = IndexParams(target_recall=0.95, ivf_nlist=40, pq_m=4, k_factor=2, tune_queries=150)
    idx = build_index(x, meta(6000), kind="ivfpq", params=p)
    st = idx.parts["image"].settings
    assert st["refine"] and st["tuned_recall"] >= 0.95 and st["k_factor"] in (4, 8, 16) and 1 <= st["nprobe"] <= 40  # 4-byte codes: deeper re-ranking needed
    idx.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    import faiss

    impl = loaded.parts["image"].impl
    assert impl.k_factor == st["k_factor"] and faiss.extract_index_ivf(impl).nprobe == st["nprobe"]
    assert loaded.parts["image"].settings == st
    np.testing.assert_array_equal(loaded.search_arrays(q, 10)[1], idx.search_arrays(q, 10)[1])
    assert recall(idx.search_arrays(q, 10)[1], brute(q, x, 10)[0]) >= 0.85


def test_single_query_search_equals_batched_and_keeps_thread_setting():
    import faiss

    rng = np.random.default_rng(15)
    x, q = clustered(rng, 3000), clustered(rng, 6)
    idx = build_index(x, meta(3000), kind="ivfpq", params=IndexParams(ivf_nlist=16, nprobe=4, pq_m=8, refine=True))
    before = faiss.omp_get_max_threads()
    batched = idx.search_arrays(q, 10)[1]
    single = np.concatenate([idx.search_arrays(q[i], 10)[1] for i in range(len(q))])
    np.testing.assert_array_equal(single, batched)
    assert faiss.omp_get_max_threads() == before


def test_exact_topk_can_leave_rows_out():
    rng = np.random.default_rng(16)
    x, q = unit(rng, 700), unit(rng, 4)
    skip = np.sort(rng.choice(700, 90, replace=False))
    keep = np.setdiff1d(np.arange(700), skip)
    _, got = exact_topk(q, x, 10, chunk=128, exclude=skip)
    np.testing.assert_array_equal(got, keep[brute(q, x[keep], 10)[0]])
