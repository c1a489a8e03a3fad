"""anybind: one embedding space for every kind of data.

Quick start::

    import anybind
    model = anybind.create_model()                       # tiny random encoders for the five modalities
    emb = model.embed({"text": ["a red cube"], "audio": ["dog.wav"]})
    model = anybind.load("runs/demo/checkpoints/last")  # a trained checkpoint

``import anybind`` is light: the names below are imported on first use (PyTorch included), so that a command's
``--help`` or a one-line error costs no deep-learning start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AnybindError, CheckpointError, InputError, RegistryError

__version__ = "0.1.0"

# public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "load": "checkpoint", "save_model": "checkpoint",
    "EncoderProtocol": "layers.tower", "EncoderTower": "layers.tower",
    "get_modality": "modality", "list_modalities": "modality", "modality_for_path": "modality",
    "register_modality": "modality",
    "AnyBindModel": "model", "create_model": "model",
    "from_open_clip": "pretrained",
    "create_encoder": "registry", "list_encoders": "registry", "plugin_errors": "registry",
    "register_encoder": "registry",
}

__all__ = [
    "AnyBindModel", "AnybindError", "CheckpointError", "EncoderProtocol", "EncoderTower", "InputError",
    "RegistryError", "create_encoder", "create_model", "from_open_clip", "get_modality", "list_encoders", "list_modalities",
    "load", "modality_for_path", "plugin_errors", "register_encoder", "register_modality", "save_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anybind' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:  # static tools see the eager imports
    from .checkpoint import load, save_model
    from .layers.tower import EncoderProtocol, EncoderTower
    from .model import AnyBindModel, create_model
    from .modality import get_modality, list_modalities, modality_for_path, register_modality
    from .pretrained import from_open_clip
    from .registry import create_encoder, list_encoders, plugin_errors, register_encoder
