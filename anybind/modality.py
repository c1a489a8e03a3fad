"""Modalities: names, file formats, readers, transforms and collation.

A modality says how a file or an in-memory object becomes one sample tensor, given an encoder's
*input contract* (a plain dict such as ``{"sample_rate": 16000, "num_mel_bins": 128, ...}``). The five built-in
modalities and the ImageBind-only ones (``depth``, ``thermal``, ``imu``) are registered here through the same
public :func:`register_modality` that a plugin calls; reader and transform may be given as ``"module:function"``
strings so that ``import anybind`` stays light (no librosa or decord import until a file is read).
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import InputError, RegistryError

Reader = Callable[[Path], Any]
log = logging.getLogger(__name__)

TransformFactory = Callable[[dict], Callable[[Any], torch.Tensor]]


def _resolve(fn: Callable | str | None) -> Callable | None:
    if fn is None or callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def stack_collate(items: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(items))


@dataclass
class Modality:
    """How one modality's inputs become tensors.

    * ``reader(path) -> raw``: decode a file (the only code that knows file formats).
    * ``transform(contract) -> fn(raw) -> Tensor``: a factory; the returned function runs in DataLoader workers.
    * ``collate(list[Tensor]) -> Tensor``: batch the per-sample tensors.
    * ``extensions``: file suffixes (lower case, with dot) used to infer the modality of a file.
    * ``explicit_extensions``: further suffixes the reader accepts only when the modality is given (a manifest key,
      ``as_modality=``), never inferred from the name: ``.txt`` is text, unless a points file is asked for.
    * ``text_like``: plain strings are the content itself, not paths (``text``).
    * ``default_encoder``: registry name used by ``create_model()`` without arguments.
    """

    name: str
    reader: Reader | str
    transform: TransformFactory | str
    collate: Callable[[Sequence[torch.Tensor]], torch.Tensor] | str = stack_collate
    extensions: tuple[str, ...] = ()
    text_like: bool = False
    default_encoder: str | None = None
    builtin: bool = False
    description: str = ""
    explicit_extensions: tuple[str, ...] = ()
    origin: str = ""  # who registered it (module and plugin entry point), named by conflict errors
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def readable_extensions(self) -> tuple[str, ...]:
        """Every suffix the reader takes when this modality is given explicitly."""
        return self.extensions + tuple(e for e in self.explicit_extensions if e not in self.extensions)

    def read(self, path: str | Path, **options: Any) -> Any:
        """Decode ``path`` with this modality's reader; ``options`` are hints some readers take (the image reader's
        ``draft``: decode a JPEG at a reduced size no smaller than that)."""
        path = Path(path)
        if not path.exists():
            raise InputError(path, self.name, "file does not exist")
        if path.is_dir():
            raise InputError(path, self.name, "is a directory, expected a file")
        try:
            return _resolve(self.reader)(path, **options) if options else _resolve(self.reader)(path)
        except InputError:
            raise
        except Exception as exc:  # the decoder's own message, wrapped so the file and modality are named
            raise InputError(path, self.name, f"could not be decoded ({type(exc).__name__}: {exc})") from exc

    def make_transform(self, contract: dict) -> Callable[[Any], torch.Tensor]:
        """The transform for ``contract``; ``contract["compat"]`` selects a registered preprocessing variant
        (:func:`register_compat_transform`), e.g. ImageBind's bit-exact one."""
        compat = contract.get("compat")
        if compat:
            if compat not in {c for c, _ in _COMPAT_TRANSFORMS}:
                known = sorted({c for c, _ in _COMPAT_TRANSFORMS})
                raise RegistryError(f"unknown preprocessing variant compat={compat!r} for {self.name!r}; known: {known}")
            factory = _COMPAT_TRANSFORMS.get((compat, self.name))
            if factory is not None:  # a variant without an entry for this modality uses the standard transform
                return _resolve(factory)(dict(contract))
        return _resolve(self.transform)(dict(contract))

    def collate_fn(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return _resolve(self.collate)(items)

    def is_path(self, item: Any) -> bool:
        """Whether ``item`` names a file (rather than being in-memory data or, for text, the text itself)."""
        if isinstance(item, Path):
            return True
        if not isinstance(item, str):
            return False
        if not self.text_like:
            return True
        return item.lower().endswith(".txt") and "\n" not in item and Path(item).is_file()

    def load(self, item: Any, **options: Any) -> tuple[Any, str]:
        """Turn one user item (path, string, array or tensor) into raw data; also return a name for errors.
        ``options`` go to :meth:`read` for files."""
        if self.is_path(item):
            return self.read(item, **options), str(item)
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        return item, f"<{self.name} {type(item).__name__}>"


# The largest value an input contract may hold, per key. A contract sizes every item's tensor (and sidecars drive
# contracts), so an absurd value would make each item allocate gigabytes; these caps sit far above every released
# model (ImageBind: 224 px, 204 frames, 2 frames per clip; AST: 1024 frames; Point-BERT: 8192 points).
CONTRACT_BOUNDS: dict[str, int | float] = {
    "image_size": 4096, "frames": 256, "clips": 64, "spatial_crops": 16, "sample_rate": 192_000,
    "num_mel_bins": 512, "target_length": 8192, "clip_duration": 60.0, "num_points": 1 << 20, "min_points": 1 << 20,
    "context_length": 32768, "channels": 64, "window": 1 << 16, "length": 1 << 20,
}
MAX_ITEM_ELEMENTS = 1 << 28  # one item's tensor (clips x channels x frames x size x size ...): 1 GiB of float32


def check_contract_bounds(contract: Any, where: str) -> dict:
    """Refuse an input contract whose numbers exceed :data:`CONTRACT_BOUNDS`, or whose items would exceed
    :data:`MAX_ITEM_ELEMENTS` elements, with a :class:`~anybind.errors.ContractError` naming ``where`` (e.g. the
    checkpoint and tower), the key, the value and the bound. Returns the contract as a plain dict."""
    from .errors import ContractError

    if not isinstance(contract, dict):
        raise ContractError(f"{where}: the input contract must be a mapping, got {type(contract).__name__}")
    for key, bound in CONTRACT_BOUNDS.items():
        value = contract.get(key)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not (0 <= value <= bound):
            raise ContractError(f"{where}: input contract {key}={value!r} is outside 0..{bound} (no model needs more; "
                                "the contract is damaged or hostile)")
    clips = int(contract.get("clips") or 1) * int(contract.get("spatial_crops") or 1)
    size, frames = int(contract.get("image_size") or 0), int(contract.get("frames") or 1)
    tensors = {  # what one item decodes to, per kind of contract
        "pixels": (clips, 3, frames, size, size) if size else (),
        "log-mel values": (clips, int(contract.get("num_mel_bins") or 0), int(contract.get("target_length") or 0)),
        "waveform samples": (clips, int((contract.get("sample_rate") or 0) * (contract.get("clip_duration") or 0))),
        "point values": (int(contract.get("num_points") or 0), int(contract.get("channels") or 3)),
    }
    for what, shape in tensors.items():
        elements = 1
        for n in shape:
            elements *= n
        if shape and elements > MAX_ITEM_ELEMENTS:
            raise ContractError(f"{where}: the input contract makes every item {' x '.join(map(str, shape))} = "
                                f"{elements:,} {what}, over the {MAX_ITEM_ELEMENTS:,} an item may hold")
    return dict(contract)


_MODALITIES: dict[str, Modality] = {}


def _owner_of(m: Modality) -> str:
    return m.origin or "?"


def register_modality(
    name: str,
    *,
    reader: Reader | str,
    transform: TransformFactory | str,
    collate: Callable | str = stack_collate,
    extensions: Sequence[str] = (),
    text_like: bool = False,
    default_encoder: str | None = None,
    description: str = "",
    explicit_extensions: Sequence[str] = (),
    replace: bool = False,
    _builtin: bool = False,
) -> Modality:
    """Add a modality: how a file or an in-memory item becomes one sample tensor for an encoder. Returns it.

    * ``name``: a lower-case identifier, singular (``timeseries``); the key of manifests, ``model.embed({...})``
      and ``modality.<name>`` in training configs.
    * ``reader(path: pathlib.Path, **options) -> raw``: decode one file. ``path`` exists and is a file (checked
      before the call). ``options`` are hints a transform asks for through a ``reader_options`` dict attribute (the
      image reader's ``draft``); a reader that takes none may accept only ``path``. Raise
      :class:`~anybind.errors.InputError` ``(path, name, problem)`` for a bad file; any other exception is wrapped
      into one naming the file and the modality.
    * ``transform(contract: dict) -> fn(raw) -> Tensor``: a factory called once per encoder with its
      ``input_contract`` (a copy); read the keys the encoder set and fail on a missing one. ``fn`` runs in
      DataLoader workers, so it must pickle (a module-level function, a closure over plain values, or a small
      class); it takes what the reader returns, or the in-memory item a user passed (a tensor, a NumPy array made a
      tensor, a string for ``text_like`` modalities). A ``fn.prepare()`` method, when present, is called once in
      the main process before workers fork (build a tokenizer there). A plain exception from ``fn`` becomes an
      InputError naming the file it came from; with ``data.skip_errors`` the sample is skipped and counted.
    * ``collate(list[Tensor]) -> Tensor``: batch the per-sample tensors (default :func:`stack_collate`,
      ``torch.stack``); the batch goes to the encoder's ``forward`` as is.
    * ``extensions``: suffixes (``".csv"`` or ``"csv"``, any case) that mark a file as this modality
      (:func:`modality_for_path`); ``explicit_extensions``: further suffixes the reader takes only when the modality
      is given by name (a suffix another modality claims, such as ``.txt`` for points).
    * ``text_like``: plain strings are the content itself, not paths (``text``).
    * ``default_encoder``: the registry name :func:`anybind.create_model` uses for this modality when no encoder
      is named.
    * ``reader``, ``transform`` and ``collate`` may be ``"module:function"`` strings, imported on first use.

    A name another owner registered raises :class:`~anybind.registry.PluginConflictError` naming both owners unless
    ``replace=True`` (which takes it over on purpose, logged as a warning); an ``extensions`` suffix that another
    modality already claims always raises (give it as an ``explicit_extensions`` suffix instead). The built-in names
    (:data:`RESERVED_MODALITIES`) are taken. See docs/plugins.md for a complete plugin.
    """
    from .registry import conflict, ensure_loaded, owner

    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"modality names are lower-case identifiers, got {name!r}")
    if not _builtin:
        ensure_loaded()  # meet the names and extensions of the built-ins and the plugins
    new = owner(sys._getframe(1).f_globals.get("__name__", "?"))  # the registering module
    prev = _MODALITIES.get(name)
    if prev is not None and not replace:
        raise conflict("modality", name, _owner_of(prev), new)
    norm = lambda seq: tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in seq)  # noqa: E731
    exts = norm(extensions)
    for other in _MODALITIES.values():
        taken = [e for e in exts if e in other.extensions]
        if other.name != name and taken:
            raise conflict("file extension", taken[0], f"{_owner_of(other)} (modality {other.name!r})",
                           f"{new} (modality {name!r})", f"list it in explicit_extensions= instead (read only when "
                           f"{name!r} is named), or re-register {other.name!r} without it")
    if prev is not None:
        log.warning("modality %r of %s is replaced by %s (replace=True)", name, _owner_of(prev), new)
    m = Modality(name, reader, transform, collate, exts, text_like, default_encoder, _builtin, description,
                 norm(explicit_extensions), origin="anybind (built-in)" if _builtin else new)
    _MODALITIES[name] = m
    return m


def unregister_modality(name: str) -> None:
    """Remove ``name`` (used by tests and by plugins that replace their own entries)."""
    _MODALITIES.pop(name, None)


_COMPAT_TRANSFORMS: dict[tuple[str, str], TransformFactory | str] = {}


def register_compat_transform(compat: str, modality: str, factory: TransformFactory | str) -> None:
    """Register the transform factory used when an encoder's contract says ``{"compat": compat}`` for
    ``modality`` (``factory`` may be a ``"module:function"`` string, imported on first use)."""
    _COMPAT_TRANSFORMS[(compat, modality)] = factory


def get_modality(name: str) -> Modality:
    if name not in _MODALITIES:
        from .registry import load_plugins

        load_plugins()  # a plugin may define it
    if name not in _MODALITIES:
        import difflib

        close = difflib.get_close_matches(name, list(_MODALITIES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown modality {name!r} (known: {', '.join(sorted(_MODALITIES))}){hint}")
    return _MODALITIES[name]


def list_modalities() -> list[str]:
    from .registry import load_plugins

    load_plugins()
    return sorted(_MODALITIES)


def modality_for_path(path: str | Path) -> str:
    """Infer the modality of a file from its extension (``.wav`` -> ``audio``)."""
    suffix = Path(path).suffix.lower()
    hits = [m.name for m in _MODALITIES.values() if suffix in m.extensions]
    if len(hits) != 1:
        problem = "no modality claims" if not hits else f"several modalities ({', '.join(hits)}) claim"
        raise InputError(path, "?", f"{problem} the extension {suffix!r}; give the modality explicitly")
    return hits[0]


BUILTIN_MODALITIES = ("image", "text", "audio", "video", "points")
# Every name anybind registers itself: a plugin's register_modality of one of these raises unless replace=True.
RESERVED_MODALITIES = BUILTIN_MODALITIES + ("depth", "thermal", "imu")

_R = "anybind.data.readers:"
_T = "anybind.data.transforms:"
register_modality(
    "image", reader=_R + "read_image", transform=_T + "image_transform", _builtin=True,
    extensions=(".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"), default_encoder="image_vit_tiny",
    description="still images; RGB",
)
register_modality(
    "text", reader=_R + "read_text", transform=_T + "text_transform", text_like=True, _builtin=True,
    extensions=(".txt",), default_encoder="text_transformer_tiny", description="strings or UTF-8 .txt files",
)
register_modality(
    "audio", reader=_R + "open_audio", transform=_T + "audio_transform", _builtin=True,
    extensions=(".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac"), default_encoder="audio_vit_tiny",
    description="waveforms -> log-mel clips; the audio track of a video file when the modality is given",
    explicit_extensions=(".mp4", ".webm", ".mkv", ".mov", ".avi"),  # by name these are video
)
register_modality(
    "video", reader=_R + "read_video", transform=_T + "video_transform", _builtin=True,
    extensions=(".mp4", ".webm", ".avi", ".mkv", ".mov"), default_encoder="video_vit_tiny",
    description="frame clips sampled uniformly",
)
register_modality(
    "points", reader=_R + "read_points", transform=_T + "points_transform", _builtin=True,
    extensions=(".npy", ".npz", ".ply", ".xyz", ".pts", ".off", ".obj"), default_encoder="points_transformer_tiny",
    description="point clouds (xyz or xyzrgb) and meshes", explicit_extensions=(".txt",),  # .txt by name is text
)
# ImageBind-compatible modalities: tensors only (already preprocessed the ImageBind way).
for _name in RESERVED_MODALITIES[len(BUILTIN_MODALITIES):]:
    register_modality(_name, reader=_R + "read_tensor_file", transform=_T + "identity_transform", _builtin=True,
                      description="preprocessed tensors (ImageBind compatibility)")
# ImageBind's own preprocessing (bit-exact parity), selected by input_contract["compat"] == "imagebind".
for _name in ("image", "text", "audio", "video", "depth", "thermal", "imu"):
    register_compat_transform("imagebind", _name, f"anybind.compat.preprocess:{_name}_transform")
# Pretrained towers from model libraries: their own eval preprocessing (anybind.data.library_transforms).
register_compat_transform("open_clip", "image", "anybind.data.library_transforms:library_image_transform")
register_compat_transform("open_clip", "text", "anybind.data.library_transforms:open_clip_text_transform")
register_compat_transform("timm", "image", "anybind.data.library_transforms:library_image_transform")
# A Hugging Face folder's own tokenizer / feature extractor (towers hf_text, hf_audio), selected by compat == "hf".
for _name in ("text", "audio"):
    register_compat_transform("hf", _name, f"anybind.data.hf:{_name}_transform")
