"""The encoder registry.

Builders are small functions decorated with :func:`register_encoder`; they take plain keyword arguments
and return an encoder module (see :class:`anybind.layers.tower.EncoderTower` for the contract).
Built-in encoders live in the top-level ``encoders`` package and are found through the entry-point group
``anybind.encoders``, the same path a third-party package uses, so plugin discovery runs on every import.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import logging
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from .errors import RegistryError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "anybind.encoders"


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    modality: str
    builder: Callable[..., Any]
    module: str
    tags: tuple[str, ...] = field(default_factory=tuple)


_ENCODERS: dict[str, EncoderEntry] = {}
_plugins_loaded = False
_plugin_lock = threading.RLock()
_plugin_errors: dict[str, str] = {}


def register_encoder(name: str, *, modality: str, tags: tuple[str, ...] = ()):
    """Decorator: register ``builder`` under ``name`` for ``modality``. A duplicate name raises."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _ENCODERS:
            prev = _ENCODERS[name]
            raise RegistryError(
                f"encoder {name!r} is already registered by {prev.module}.{prev.builder.__name__}; "
                f"pick another name for {builder.__module__}.{builder.__name__}"
            )
        _ENCODERS[name] = EncoderEntry(name, modality, builder, builder.__module__, tuple(tags))
        builder.encoder_name = name  # type: ignore[attr-defined]
        return builder

    return deco


def unregister_encoder(name: str) -> None:
    """Remove ``name`` (used by tests and by plugins that replace their own entries)."""
    _ENCODERS.pop(name, None)


def load_plugins(force: bool = False) -> dict[str, str]:
    """Import every module advertised under the ``anybind.encoders`` entry-point group.

    A plugin that fails to import is reported (logged, and returned as ``{entry point: error}``) rather than
    breaking every other encoder.
    """
    global _plugins_loaded
    with _plugin_lock:
        if _plugins_loaded and not force:
            return dict(_plugin_errors)
        _plugins_loaded = True
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != "builtin", e.name)):
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj()  # an entry point may name a ``register()`` function instead of a module
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
                _plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("anybind plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
        if not any(e.module.startswith("encoders.") for e in _ENCODERS.values()):
            # Running from a checkout that was never installed: no entry points exist yet.
            try:
                importlib.import_module("encoders")
            except ImportError as exc:
                log.warning("built-in encoders not found (%s); install anybind with pip install -e .", exc)
        return dict(_plugin_errors)


def _entry(name: str) -> EncoderEntry:
    load_plugins()
    base = name.split(".", 1)[0]
    if base not in _ENCODERS:
        close = difflib.get_close_matches(base, list(_ENCODERS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_ENCODERS)) or 'none'}"
        raise RegistryError(f"unknown encoder {name!r}{hint}")
    return _ENCODERS[base]


def get_encoder_entry(name: str) -> EncoderEntry:
    return _entry(name)


def create_encoder(name: str, **kwargs: Any):
    """Build the encoder registered as ``name`` with builder keyword arguments ``kwargs``."""
    entry = _entry(name)
    enc = entry.builder(**kwargs)
    enc.registry_name = entry.name
    # ``pretrained`` names the file a tower started from; a saved model carries its own weights, so reloading it
    # must not need (or re-read) that file.
    enc.build_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained"}
    if getattr(enc, "modality", None) is None:
        enc.modality = entry.modality
    return enc


def list_encoders(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Sorted encoder names matching the glob ``pattern`` (and ``modality`` when given)."""
    load_plugins()
    return sorted(
        n for n, e in _ENCODERS.items() if fnmatch.fnmatchcase(n, pattern) and (modality is None or e.modality == modality)
    )
