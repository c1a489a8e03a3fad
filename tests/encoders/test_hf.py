"""Hugging Face towers: parity with sentence-transformers and transformers, pooling, contracts, errors, no-extra import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import anybind
from anybind.errors import CheckpointError
from hf_folders import MINILM, tiny_ast, tiny_bert, tiny_wav2vec2

pytest.importorskip("transformers")
REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def minilm():
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} not found")
    return anybind.create_model({"text": {"name": "hf_text", "path": str(MINILM)}})


def test_minilm_equals_the_reference_embeddings(minilm, tmp_path):
    txt = tmp_path / "s.txt"
    txt.write_text(REFERENCE["sentences"][1])
    texts = REFERENCE["sentences"][:1] + [str(txt)] + REFERENCE["sentences"][2:]  # one through a real .txt file
    got = minilm.embed({"text": texts})["text"]
    assert got.shape == (4, 384) and minilm.embed_dim == 384
    assert (got - torch.tensor(REFERENCE["embeddings"])).abs().max() < 2e-4


def test_minilm_equals_sentence_transformers_encode(minilm):
    st = pytest.importorskip("sentence_transformers")
    texts = ["a voice saying seven", "  The NUMBER after six.  ", "word " * 400, "7"]  # case, spaces, truncation
    ref = st.SentenceTransformer(str(MINILM), device="cpu", local_files_only=True).encode(texts, convert_to_tensor=True)
    assert (minilm.embed({"text": texts}, batch_size=3)["text"] - ref.cpu()).abs().max() < 2e-4
    contract = minilm.input_contract("text")
    assert contract["max_length"] == 256 and contract["tokenizer"] == str(MINILM.resolve())


def _reference_text(folder, texts, pool):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    m = enc["attention_mask"].unsqueeze(-1).float()
    pooled = {"pooler": out.pooler_output, "cls": out.last_hidden_state[:, 0],
              "mean": (out.last_hidden_state * m).sum(1) / m.sum(1),
              "max": out.last_hidden_state.masked_fill(m == 0, -1e9).max(1).values}[pool]
    return F.normalize(pooled, dim=-1)


@pytest.mark.parametrize("pool", [None, "cls", "mean", "max"])
def test_tiny_bert_pooling_follows_the_folder(tmp_path, pool):
    folder = tiny_bert(tmp_path / "bert", pooling=pool)
    tower = anybind.create_encoder("hf_text", path=str(folder))
    assert tower.pooling == ((pool or "pooler"),)  # no 1_Pooling: transformers' pooler_output
    texts = ["a red cube", "two small dogs are barking loudly", "x"]
    got = anybind.AnyBindModel({"text": tower}, tower.embed_dim).embed({"text": texts})["text"]
    assert (got - _reference_text(folder, texts, pool or "pooler")).abs().max() < 2e-4


def test_projection_normalize_and_checkpoint_round_trip(tmp_path):
    folder = tiny_bert(tmp_path / "bert", pooling="mean", normalize=True)
    model = anybind.create_model({"text": {"name": "hf_text", "path": str(folder), "embed_dim": 16}})
    tower = model.encoders["text"]
    assert tower.normalize and tower.embed_dim == 16 and isinstance(tower.proj, torch.nn.Linear)
    texts = ["a red cube", "a blue sphere"]
    ids = torch.stack([tower_input(model, t) for t in texts])
    with torch.no_grad():
        pooled = F.normalize(tower.forward_head(tower.forward_features(ids), ids), dim=-1)
        feats = tower.forward_features(ids).last_hidden_state
        m = ids[:, 1, : feats.shape[1]].unsqueeze(-1).float()
        expect = F.normalize(F.normalize((feats * m).sum(1) / m.sum(1), dim=-1) @ tower.proj.weight.T, dim=-1)
    assert (pooled - expect).abs().max() < 1e-6
    anybind.save_model(tmp_path / "ckpt" / "model", model)
    again = anybind.load(tmp_path / "ckpt" / "model")
    assert torch.equal(again.embed({"text": texts})["text"], model.embed({"text": texts})["text"])


def tower_input(model, text):
    from anybind.modality import get_modality

    return get_modality("text").make_transform(model.input_contract("text"))(text)


def test_ast_audio_equals_transformers_pooler_output(tmp_path):
    import soundfile as sf
    import torchaudio.functional as AF
    from transformers import ASTFeatureExtractor, ASTModel

    folder = tiny_ast(tmp_path / "ast")
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(12000, generator=g), 0.1 * torch.randn(8000, generator=g)]
    sf.write(tmp_path / "a.wav", waves[1].numpy(), 8000)  # a real file at another rate: resampled to 16 kHz
    model = anybind.create_model({"audio": {"name": "hf_audio", "path": str(folder)}})
    c = model.input_contract("audio")
    assert c["sample_rate"] == 16000 and c["feature_shape"] == [64, 32] and model.encoders["audio"].pooling == ("pooler",)
    got = model.embed({"audio": [(waves[0], 16000), str(tmp_path / "a.wav")]})["audio"]
    wav, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    fe = ASTFeatureExtractor.from_pretrained(folder)
    x = fe([waves[0].numpy(), AF.resample(torch.from_numpy(wav), 8000, 16000).numpy()], sampling_rate=16000,
           return_tensors="pt")
    with torch.no_grad():
        ref = F.normalize(ASTModel.from_pretrained(folder).eval()(**x).pooler_output, dim=-1)
    assert (got - ref).abs().max() < 2e-4


def test_wav2vec2_audio_mean_pools_a_fixed_clip(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tiny_wav2vec2(tmp_path / "w2v")
    model = anybind.create_model({"audio": {"name": "hf_audio", "path": str(folder), "clip_duration": 0.5}})
    assert model.input_contract("audio")["max_samples"] == 8000 and model.encoders["audio"].pooling == ("mean",)
    g = torch.Generator().manual_seed(1)
    waves = [0.1 * torch.randn(5000, generator=g), 0.1 * torch.randn(11000, generator=g)]  # padded / cropped
    got = model.embed({"audio": [(w, 16000) for w in waves]})["audio"]
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    x = fe([w.numpy() for w in waves], sampling_rate=16000, padding="max_length", max_length=8000, truncation=True,
           return_tensors="pt")
    with torch.no_grad():
        ref = F.normalize(Wav2Vec2Model.from_pretrained(folder).eval()(x["input_values"]).last_hidden_state.mean(1), dim=-1)
    assert (got - ref).abs().max() < 2e-4
    proj = anybind.create_encoder("hf_audio", path=str(folder), clip_duration=0.5, embed_dim=8)
    assert proj(torch.randn(2, 8000)).shape == (2, 8)


def test_folders_without_what_they_need_fail_naming_the_file(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    for f in ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        (folder / f).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        anybind.create_encoder("hf_text", path=str(folder))
    with pytest.raises(CheckpointError, match="preprocessor_config.json is missing"):
        anybind.create_encoder("hf_audio", path=str(folder))
    with pytest.raises(CheckpointError, match="config.json is missing"):
        anybind.create_encoder("hf_text", path=str(tmp_path))
    with pytest.raises(CheckpointError, match="not a folder"):
        anybind.create_encoder("hf_text", path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown pooling"):
        anybind.create_encoder("hf_text", path=str(tiny_bert(tmp_path / "b2")), pooling="median")


def test_anybind_imports_without_transformers(tmp_path):
    folder = MINILM
    if not MINILM.is_dir():  # a folder that passes anybind's own checks, so that the missing library is what fails
        folder = tmp_path / "m"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import anybind\n"
            "assert 'hf_text' in anybind.list_encoders() and 'hf_audio' in anybind.list_encoders(modality='audio')\n"
            f"try:\n    anybind.create_encoder('hf_text', path={str(folder)!r})\n"
            "except ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install anybind[hf]" in out.stdout


def test_a_checkpoint_loads_without_the_model_folder(tmp_path):
    import shutil

    folder = tiny_bert(tmp_path / "bert", pooling="mean", normalize=True)
    model = anybind.create_model({"text": {"name": "hf_text", "path": str(folder), "embed_dim": 16}})
    texts = ["a red cube", "a blue sphere"]
    want = model.embed({"text": texts})["text"]
    saved = anybind.save_model(tmp_path / "ckpt" / "model", model)
    sidecar = json.loads(saved.with_suffix(".json").read_text())
    spec = sidecar["encoders"]["text"]
    assert spec["assets"] == "model.assets/text" and spec["kwargs"]["path"] == "@assets"
    assert str(folder) not in json.dumps(sidecar)  # the sidecar names no path of this machine
    bundled = sorted(p.name for p in (saved.parent / "model.assets" / "text").rglob("*") if p.is_file())
    assert "config.json" in bundled and not any(n.endswith((".safetensors", ".bin")) for n in bundled)
    shutil.rmtree(folder)
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "ckpt"), moved)
    again = anybind.load(moved / "model")
    assert torch.equal(again.embed({"text": texts})["text"], want)
    shutil.rmtree(moved / "model.assets")
    with pytest.raises(CheckpointError, match="model.assets/text.*missing"):
        anybind.load(moved / "model")
