"""The one embedding loop (anybind.model.embed_items / encode_batches) behind model.embed and evaluation."""

import json

import torch
from layouts import COLORS, write_png

import anybind
from anybind.eval.embedding import embed_manifest
from anybind.model import ItemDataset, embed_items


def test_embed_items_reports_bad_items_and_matches_model_embed(tmp_path):
    torch.manual_seed(0)
    model = anybind.create_model({"image": "image_vit_test", "text": "text_transformer_test"})
    good = [str(write_png(tmp_path / f"{k}.png", COLORS[k])) for k in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = embed_items(model, "image", [good[0], str(bad), good[1], good[2]], batch_size=2, skip_errors=True)
    assert out.ok.tolist() == [True, False, True, True] and out.errors[0][0] == 1 and "bad.png" in out.errors[0][1]
    ref = model.embed({"image": good})["image"]
    assert torch.allclose(out.embeddings[out.ok], ref, atol=1e-6)
    assert torch.allclose(out.embeddings[out.ok].norm(dim=1), torch.ones(3))
    bf16 = embed_items(model, "image", good, autocast=True).embeddings  # bfloat16 towers, float32 unit vectors out
    assert bf16.dtype == torch.float32 and torch.allclose(bf16, ref, atol=0.05)
    rows = [{"id": f"s{k}", "image": p, "label": "c"} for k, p in enumerate(good)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    emb, keys = embed_manifest(model, manifest, ["image"], batch_size=2, match_key="id")
    assert keys["image"] == ["s0", "s1", "s2"] and torch.allclose(emb["image"], ref, atol=1e-6)


def test_main_process_transforms_run_on_one_thread():
    seen = []
    ds = ItemDataset("image", [torch.zeros(3, 8, 8)], {"image_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1],
                                                       "interpolation": "bilinear"})
    ds._transform = lambda raw: (seen.append(torch.get_num_threads()), raw)[1]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds[0]
        assert seen == [1] and torch.get_num_threads() == 2  # restored for the tower
    finally:
        torch.set_num_threads(before)


def test_evaluation_throughput_suite_runs(tmp_path):
    from anybind.bench.eval import make_folders, run_suite

    rows = run_suite(workdir=tmp_path, modalities=["points", "text"], workers=[0], n=2, captions=16)
    assert [(r["modality"], r["items"], r["workers"]) for r in rows] == [("points", 2, 0), ("text", 16, 0)]
    assert all(r["items_per_s"] > 0 and r["load"] >= 0 for r in rows)
    assert sorted(p.name for p in make_folders(tmp_path, "points", 2).iterdir()) == [".complete", "class_a", "class_b"]
