"""anybind: one embedding space for every kind of data.

Quick start::

    import anybind
    model = anybind.create_model()                       # tiny random encoders for the five modalities
    emb = model.embed({"text": ["a red cube"], "audio": ["dog.wav"]})
    model = anybind.load("runs/demo/checkpoints/last")  # a trained checkpoint
"""

from .checkpoint import load, save_model
from .errors import AnybindError, CheckpointError, InputError, RegistryError
from .layers.tower import EncoderProtocol, EncoderTower
from .modality import get_modality, list_modalities, modality_for_path, register_modality
from .model import AnyBindModel, create_model
from .pretrained import from_open_clip
from .registry import create_encoder, list_encoders, register_encoder

__version__ = "0.1.0"

__all__ = [
    "AnyBindModel", "AnybindError", "CheckpointError", "EncoderProtocol", "EncoderTower", "InputError",
    "RegistryError", "create_encoder", "create_model", "from_open_clip", "get_modality", "list_encoders", "list_modalities",
    "load", "modality_for_path", "register_encoder", "register_modality", "save_model",
]
