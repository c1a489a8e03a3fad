"""Tiny randomly initialised Hugging Face model folders, saved with save_pretrained into a test's tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import torch

MINILM = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-MiniLM-L6-v2"


def tiny_bert(folder: Path, *, pooling: str | None = None, normalize: bool = False, seed: int = 0) -> Path:
    """A 2-layer, width-32 BERT with MiniLM's uncased WordPiece tokenizer; ``pooling`` ("mean", "max", "cls") adds a
    sentence-transformers ``1_Pooling/config.json`` (and ``modules.json``)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    vocab = MINILM / "vocab.txt"
    if not vocab.is_file():  # without ../shared: a small WordPiece vocabulary of its own
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'-",
                 *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
                 "a", "the", "red", "blue", "green", "cube", "sphere", "thing", "number", "photo", "of", "dog"]
        folder.mkdir(parents=True, exist_ok=True)
        vocab = folder.parent / f".{folder.name}-vocab.txt"
        vocab.write_text("\n".join(dict.fromkeys(words)) + "\n")
    BertTokenizer(str(vocab), do_lower_case=True).save_pretrained(folder)
    if pooling:
        (folder / "1_Pooling").mkdir()
        keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, **{k: k == keys[pooling] for k in keys.values()}}))
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def tiny_ast(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, width-32 Audio Spectrogram Transformer over 32 mel bins x 64 frames, with its feature extractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_mel_bins=32,
                    max_length=64, patch_size=16, frequency_stride=16, time_stride=16)
    ASTModel(cfg).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return folder


def tiny_wav2vec2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, width-32 Wav2Vec2 (two conv layers, stride 20) with a raw-waveform feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(folder)
    return folder
