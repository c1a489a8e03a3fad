"""anybind-eval: the retrieval matrix and zero-shot results against a brute-force reference; the Hydra configs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from retrieval_assets import TEST_ENCODERS, make_collection, tiny_model

from anybind.retrieval import EmbeddingStore
from anybind.retrieval.cli import run_embed, run_evaluate
from anybind.retrieval.evaluation import evaluate_manifest, trained_pairs_from_meta


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("data"), per_class=3)


def brute_force_retrieval(store, q, g, ks=(1, 5, 10)):
    """Rank of the first same-label gallery item for each query, by sorting every similarity (ties count against)."""
    qv, gv = store.vectors([q]), store.vectors([g])
    qk = [r["label"] for r in store.metadata([q])]
    gk = [r["label"] for r in store.metadata([g])]
    ranks = []
    for i in range(len(qv)):
        sims = gv @ qv[i]
        matches = [j for j in range(len(gv)) if gk[j] == qk[i]]
        if not matches:
            continue
        best = max(sims[j] for j in matches)
        ranks.append(1 + sum(1 for j in range(len(gv)) if gk[j] != qk[i] and sims[j] >= best))
    ranks = np.array(ranks)  # MdR: the lower median for an even count (torch.median's convention)
    return {**{f"R@{k}": float(np.mean(ranks <= k)) for k in ks}, "MdR": float(np.sort(ranks)[(len(ranks) - 1) // 2]), "n": len(ranks)}


def test_retrieval_matrix_and_zero_shot_match_brute_force(manifest, tmp_path):
    model = tiny_model()
    metrics = evaluate_manifest(model, manifest, tmp_path / "run", trained_pairs=[("image", "text"), ("image", "audio")],
                                zero_shot_templates=["a {} thing", "{}"], progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["retrieval"].keys() == metrics["retrieval"].keys()
    assert (tmp_path / "run" / "retrieval_heatmap.png").stat().st_size > 1000
    store = EmbeddingStore.open(tmp_path / "run" / "embeddings")
    mods = ["image", "text", "audio", "points"]
    assert set(metrics["retrieval"]) == {f"{a}->{b}" for a in mods for b in mods if a != b}
    for pair, got in saved["retrieval"].items():
        q, g = pair.split("->")
        want = brute_force_retrieval(store, q, g)
        for key in ("R@1", "R@5", "R@10", "MdR", "n"):
            assert got[key] == pytest.approx(want[key]), (pair, key)
        assert got["emergent"] == ({q, g} not in ({"image", "text"}, {"image", "audio"}))
    # zero-shot: nearest class prompt embedding (mean of the two templates), brute force
    classes = sorted({"red", "green", "blue"})
    emb = model.embed({"text": [t.format(c) for c in classes for t in ("a {} thing", "{}")]}, progress=False)["text"].numpy()
    cls = emb.reshape(3, 2, -1).mean(1)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    for m in ("image", "audio", "points"):
        labels = [r["label"] for r in store.metadata([m])]
        pred = np.argmax(store.vectors([m]) @ cls.T, axis=1)
        top1 = np.mean([classes[p] == lab for p, lab in zip(pred, labels)])
        z = saved["zero_shot"][f"manifest/{m}"]
        assert z["top1"] == pytest.approx(top1) and z["n"] == len(labels) and z["top5"] == 1.0
    assert saved["eval"]["failed_inputs"] == 1


def test_trained_pairs_from_checkpoint_sidecar():
    assert trained_pairs_from_meta({"trained_pairs": [["image", "audio"]]}) == [frozenset({"image", "audio"})]
    cfg = {"anchor": "image", "pairs": [], "modality": {"image": {}, "text": {}, "audio": {}}}
    assert set(trained_pairs_from_meta({"config": cfg})) == {frozenset({"image", "text"}), frozenset({"image", "audio"})}
    cfg["pairs"] = [{"modalities": ["text", "audio"]}]
    assert trained_pairs_from_meta({"config": cfg}) == [frozenset({"text", "audio"})]
    assert trained_pairs_from_meta(None) == []


def _compose(name, overrides):
    from hydra import compose, initialize_config_module

    from anybind.retrieval.config import register_configs

    register_configs()
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name=name, overrides=overrides)


def test_hydra_configs_compose_run_and_reject_typos(manifest, tmp_path):
    encoders = "{" + ",".join(f"{m}:{TEST_ENCODERS[m]}" for m in ("image", "text")) + "}"
    cfg = _compose("embed", [f"input={manifest}", f"out={tmp_path / 'emb'}", f"model.encoders={encoders}",
                             "num_workers=0", "progress=false", "index.kind=flat"])
    result = run_embed(cfg)
    assert result["vectors"] == 9 + 10 and Path(result["index"], "index.json").exists()
    cfg = _compose("evaluate", [f"manifest={manifest}", f"out_dir={tmp_path / 'ev'}", f"model.encoders={encoders}",
                                "num_workers=0", "progress=false", "heatmap=false"])
    metrics = run_evaluate(cfg)
    assert set(metrics["retrieval"]) == {"image->text", "text->image"} and "manifest/image" in metrics["zero_shot"]
    # a random model was never trained: no pair is flagged emergent (or trained); chance is beside every R@1
    assert all(v["emergent"] is None for v in metrics["retrieval"].values())
    assert metrics["retrieval"]["image->text"]["chance_R@1"] == pytest.approx(1 / 3)
    with pytest.raises(Exception, match="batch_sise"):
        _compose("embed", [f"input={manifest}", "out=x", "batch_sise=3"])
    # forcing a folder's modality is a plain key (`modality` would be read as the training config group)
    assert _compose("embed", [f"input={manifest}", "out=x", "as_modality=audio"]).as_modality == "audio"


def test_anybind_eval_console_script(manifest, tmp_path):
    exe = Path(sys.executable).with_name("anybind-eval")
    if not exe.exists():
        pytest.skip("console scripts not installed")
    run = subprocess.run([str(exe), f"manifest={manifest}", f"out_dir={tmp_path / 'run'}", "model.encoders={audio:audio_vit_test,"
                          "text:text_transformer_test}", "num_workers=0", "progress=false", "zero_shot=false",
                          f"hydra.run.dir={tmp_path / 'hydra'}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["retrieval"]) == {"audio->text", "text->audio"} and "zero_shot" not in metrics
    assert "audio->text" in run.stdout and not math.isnan(metrics["retrieval"]["audio->text"]["R@1"])
