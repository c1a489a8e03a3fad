"""Local Hugging Face model folders: the folder check and its tokenizer / feature extractor, loaded offline.

``transformers`` is an optional dependency (``pip install anybind[hf]``); nothing here imports it until a folder
is opened, and every folder is read with ``local_files_only=True``: anybind never downloads. The ``hf_text`` /
``hf_audio`` towers (:mod:`encoders.hf`) and their transforms (:mod:`anybind.data.hf`) both use these loaders.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

INSTALL_HINT = "the Hugging Face towers need transformers: pip install anybind[hf]"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
FEATURE_EXTRACTOR_FILES = ("preprocessor_config.json", "feature_extractor_config.json")

_CACHE: dict[tuple[str, str], Any] = {}  # one tokenizer / feature extractor per folder and process
_LOCK = threading.Lock()


def require_transformers():
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return transformers


def model_folder(path: str | Path, modality: str) -> Path:
    """A local Hugging Face folder with a ``config.json``, resolved to an absolute path."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"hf_{modality}: {folder} is not a folder (give a local Hugging Face model folder; "
                              "anybind never downloads)")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"hf_{modality}: {folder / 'config.json'} is missing: not a Hugging Face model folder")
    return folder.resolve()


def _load_preprocessor(folder: Path, modality: str, auto_class: str, what: str, files: tuple[str, ...],
                       missing: str):
    """``transformers.<auto_class>`` of a local folder (offline), once per folder and process. The folder must hold
    one of ``files``; ``missing`` is the error (after ``hf_<modality>:``) when it holds none."""
    if not any((folder / f).is_file() for f in files):
        raise CheckpointError(f"hf_{modality}: {missing}")
    transformers = require_transformers()
    key = (auto_class, str(folder))
    with _LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = getattr(transformers, auto_class).from_pretrained(str(folder), local_files_only=True)
            except Exception as exc:
                raise CheckpointError(f"hf_{modality}: the {what} in {folder} could not be loaded: "
                                      f"{type(exc).__name__}: {exc}") from exc
        return _CACHE[key]


def load_tokenizer(path: str | Path):
    """The folder's own tokenizer (``AutoTokenizer``, offline); a clear error when the folder has none."""
    folder = Path(path)
    return _load_preprocessor(folder, "text", "AutoTokenizer", "tokenizer", TOKENIZER_FILES,
                              f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the "
                              "tokenizer beside the model (tokenizer.save_pretrained(folder))")


def load_feature_extractor(path: str | Path):
    """The folder's own feature extractor (``AutoFeatureExtractor``, offline); a clear error when it has none."""
    folder = Path(path)
    return _load_preprocessor(folder, "audio", "AutoFeatureExtractor", "feature extractor", FEATURE_EXTRACTOR_FILES,
                              f"{folder / FEATURE_EXTRACTOR_FILES[0]} is missing: the folder has no feature "
                              "extractor (feature_extractor.save_pretrained(folder))")
