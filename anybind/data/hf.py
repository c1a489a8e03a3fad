"""Hugging Face preprocessing: a local model folder's own tokenizer and feature extractor as anybind transforms.

``transformers`` is an optional dependency (``pip install anybind[hf]``); nothing here imports it until a folder
is opened. Folders are read with ``local_files_only=True``: anybind never downloads. A tower built by
``hf_text`` / ``hf_audio`` (:mod:`encoders.hf`) writes ``{"compat": "hf", ...}`` into its input contract, which
selects the transforms below (see :func:`anybind.modality.register_compat_transform`):

* text: ``{"compat": "hf", "tokenizer": FOLDER, "max_length": L, "lowercase": bool}`` -> int64 ``(2, L)``:
  row 0 the token ids, row 1 the attention mask (padded to ``L``; the tower drops all-padding columns).
* audio: ``{"compat": "hf", "feature_extractor": FOLDER, "sample_rate": SR, "max_samples": N | None}`` -> the
  feature extractor's ``input_values`` of one clip (e.g. AST's ``(frames, mel)`` log-mel, or a raw waveform
  padded / cropped to ``N`` samples); a tensor of the contract's ``feature_shape`` counts as already extracted.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..pretrained.hf_folder import (FEATURE_EXTRACTOR_FILES, INSTALL_HINT, TOKENIZER_FILES, load_feature_extractor,
                                    load_tokenizer, model_folder, require_transformers)
from .transforms._common import positive_int, read_contract

__all__ = ["FEATURE_EXTRACTOR_FILES", "INSTALL_HINT", "TOKENIZER_FILES", "HFFeatureTransform", "HFTokenizerTransform",
           "audio_transform", "load_feature_extractor", "load_tokenizer", "model_folder", "require_transformers",
           "text_transform"]

class HFTokenizerTransform:
    """``str`` -> int64 ``(2, max_length)``: ids and attention mask from the model folder's own tokenizer.

    Like sentence-transformers, surrounding white space is stripped (and the text lower-cased when the folder's
    ``sentence_bert_config.json`` says ``do_lower_case``). An int64 ``(2, max_length)`` tensor passes unchanged.
    """

    def __init__(self, tokenizer: str, max_length: int, lowercase: bool = False):
        self.folder, self.max_length, self.lowercase = str(tokenizer), int(max_length), bool(lowercase)

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        if isinstance(raw, torch.Tensor):
            if raw.shape == (2, self.max_length) and not raw.is_floating_point():
                return raw.long()
            raise InputError(source, "text", f"expected a string or (2, {self.max_length}) token ids and mask, got "
                                             f"a {raw.dtype} tensor of shape {tuple(raw.shape)}")
        if not isinstance(raw, str):
            raise InputError(source, "text", f"expected a string, got {type(raw).__name__}")
        text = raw.strip()
        if not text:
            raise InputError(source, "text", "empty text")
        enc = load_tokenizer(self.folder)(text.lower() if self.lowercase else text, padding="max_length",
                                          truncation=True, max_length=self.max_length, return_tensors="pt")
        return torch.stack([enc["input_ids"][0], enc["attention_mask"][0]]).long()

    def __repr__(self) -> str:
        return f"HFTokenizerTransform({self.folder!r}, max_length={self.max_length})"


class HFFeatureTransform:
    """``(waveform, sample_rate)`` or a waveform -> the folder's feature extractor ``input_values`` of one clip.

    The waveform is checked and averaged to mono like :class:`anybind.data.transforms.LogMelTransform` does,
    resampled to the extractor's rate, then handed to the extractor; with ``max_samples`` the waveform is padded
    or cropped to that many samples first (raw-waveform models such as Wav2Vec2 need equal lengths in a batch).
    """

    def __init__(self, feature_extractor: str, sample_rate: int, max_samples: int | None = None,
                 feature_shape: list[int] | None = None):
        self.folder, self.sample_rate = str(feature_extractor), int(sample_rate)
        self.max_samples = int(max_samples) if max_samples else None
        self.feature_shape = tuple(feature_shape) if feature_shape else None

    def __call__(self, raw: Any, source: str | None = None) -> torch.Tensor:
        import torchaudio.functional as AF

        from .transforms import LogMelTransform
        from .transforms.audio import SampleSource

        if isinstance(raw, torch.Tensor) and self.feature_shape and tuple(raw.shape) == self.feature_shape:
            return raw.float()  # already extracted features (the contract's feature_shape)
        if isinstance(raw, SampleSource):  # a lazily read file: decode only the span one clip uses
            if self.max_samples:
                stop = min(raw.num_samples, -(-int(self.max_samples) * raw.sample_rate // self.sample_rate))
                raw = (raw.read(0, stop), raw.sample_rate)
            else:
                raw = raw.read_all()
        mono, sr = LogMelTransform(sample_rate=self.sample_rate).waveform(raw, source)
        if sr != self.sample_rate:
            mono = AF.resample(mono, sr, self.sample_rate)
        if self.max_samples:
            mono = torch.nn.functional.pad(mono, (0, max(0, self.max_samples - len(mono))))[: self.max_samples]
        fe = load_feature_extractor(self.folder)
        out = fe(mono.numpy(), sampling_rate=self.sample_rate, return_tensors="pt")
        return out["input_values"][0].float()

    def __repr__(self) -> str:
        return f"HFFeatureTransform({self.folder!r}, sample_rate={self.sample_rate}, max_samples={self.max_samples})"


# Keys a Hugging Face tower's contract carries to describe the model; the transforms do not read them.
DESCRIPTIVE_KEYS = {"library": "transformers", "model_type": None}


def text_transform(contract: dict) -> HFTokenizerTransform:
    """Contract keys: ``tokenizer`` (the model folder), ``max_length``, ``lowercase`` (all required)."""
    name = "hf text_transform"
    c = read_contract(contract, name, ("tokenizer", "max_length", "lowercase"), DESCRIPTIVE_KEYS)
    return HFTokenizerTransform(c["tokenizer"], positive_int(c["max_length"], "max_length", name), c["lowercase"])


def audio_transform(contract: dict) -> HFFeatureTransform:
    """Contract keys: ``feature_extractor`` (the model folder), ``sample_rate``, ``max_samples`` (``None``: the
    extractor pads by itself), ``feature_shape`` (``None``: features vary in length) (all required)."""
    name = "hf audio_transform"
    c = read_contract(contract, name, ("feature_extractor", "sample_rate", "max_samples", "feature_shape"),
                      DESCRIPTIVE_KEYS)
    max_samples = positive_int(c["max_samples"], "max_samples", name) if c["max_samples"] else None
    return HFFeatureTransform(c["feature_extractor"], positive_int(c["sample_rate"], "sample_rate", name),
                              max_samples, c["feature_shape"])
