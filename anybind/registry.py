"""The encoder registry.

Builders are small functions decorated with :func:`register_encoder`; they take plain keyword arguments
and return an encoder module (see :class:`anybind.layers.tower.EncoderTower` for the contract).
Built-in encoders live in the top-level ``encoders`` package and are found through the entry-point group
``anybind.encoders`` (entry point ``builtin``), the same path a third-party package uses: the core never imports
them by name. Discovery runs once per process, on the first use of the registry (docs/plugins.md).

Two plugins (or a plugin and anybind) that claim one encoder or modality name, or one file extension, are an
error at that first use, naming both owners (:class:`PluginConflictError`). A plugin that fails to import for any
other reason is logged and listed by :func:`plugin_errors`; the others keep working.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import logging
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterator

from .errors import RegistryError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "anybind.encoders"
BUILTIN_ENTRY_POINT = "builtin"  # anybind's own pyproject.toml: builtin = "encoders"


class PluginConflictError(RegistryError):
    """Two owners claim one encoder name, modality name or file extension. The message names both."""


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    modality: str
    builder: Callable[..., Any]
    module: str
    tags: tuple[str, ...] = field(default_factory=tuple)
    origin: str = ""  # who registered it: "module.function", plus the plugin entry point it came through


_ENCODERS: dict[str, EncoderEntry] = {}
_plugins_loaded = False
_plugin_lock = threading.RLock()
_plugin_errors: dict[str, str] = {}
_conflicts: list[str] = []  # name / extension conflicts met while loading: raised on every use
_missing: list[str] = []  # a missing or broken built-in entry point: raised on every use
_loading: list[str] = []  # the entry point being imported, for the owner names of what it registers


def describe_entry_point(ep: EntryPoint) -> str:
    """``plugin entry point anybind.encoders:timeseries = anybind_plugin_demo (anybind-plugin-demo 0.1)``."""
    dist = getattr(ep, "dist", None)
    where = f" ({dist.name} {dist.version})" if dist is not None else ""
    kind = "built-in" if ep.name == BUILTIN_ENTRY_POINT else "plugin"
    return f"{kind} entry point {ep.group}:{ep.name} = {ep.value}{where}"


def owner(what: str) -> str:
    """``what`` (a module or function), with the plugin entry point being loaded when there is one."""
    return f"{what} [{_loading[-1]}]" if _loading else what


@contextlib.contextmanager
def _loading_as(label: str) -> Iterator[None]:
    _loading.append(label)
    try:
        yield
    finally:
        _loading.pop()


def conflict(kind: str, name: str, existing: str, new: str, fix: str = "") -> PluginConflictError:
    """The error for ``new`` claiming the ``kind`` ``name`` that ``existing`` holds."""
    fix = fix or "pick another name, or pass replace=True to take it over deliberately"
    return PluginConflictError(f"{kind} {name!r} is already registered by {existing}; {new} registers it again: {fix}")


def register_encoder(name: str, *, modality: str, tags: tuple[str, ...] = (), replace: bool = False):
    """Decorator: register ``builder`` under ``name`` for ``modality``.

    A name that is already registered (a built-in, or another plugin's) raises :class:`PluginConflictError` naming
    both owners, unless ``replace=True``, which takes the name over on purpose (logged as a warning).
    """

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        ensure_loaded()
        new = owner(f"{builder.__module__}.{builder.__name__}")
        if name in _ENCODERS:
            prev = _ENCODERS[name]
            if not replace:
                raise conflict("encoder", name, prev.origin or f"{prev.module}.{prev.builder.__name__}", new)
            log.warning("encoder %r of %s is replaced by %s (replace=True)", name, prev.origin, new)
        _ENCODERS[name] = EncoderEntry(name, modality, builder, builder.__module__, tuple(tags), new)
        builder.encoder_name = name  # type: ignore[attr-defined]
        return builder

    return deco


def unregister_encoder(name: str) -> None:
    """Remove ``name`` (used by tests and by plugins that replace their own entries)."""
    _ENCODERS.pop(name, None)


def _load_one(ep: EntryPoint) -> None:
    label = describe_entry_point(ep)
    with _loading_as(label):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()  # an entry point may name a ``register()`` function instead of a module
        except PluginConflictError as exc:
            _conflicts.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            if ep.name == BUILTIN_ENTRY_POINT:
                _missing.append(f"the built-in encoders ({label}) failed to import: {type(exc).__name__}: {exc}")
                return
            _plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("anybind plugin %r (%s) failed to load, its encoders and modalities are missing: %s "
                        "(anybind.plugin_errors() lists it)", ep.name, ep.value, exc)


def load_plugins(force: bool = False) -> dict[str, str]:
    """Import every module advertised under the ``anybind.encoders`` entry-point group (the built-ins first).

    Returns ``{entry point: error}`` for the plugins that failed to import (also logged; see :func:`plugin_errors`).
    Raises :class:`PluginConflictError` when two owners claim one name or extension, and :class:`RegistryError`
    when the built-in encoders are not installed, on this call and every later one.
    """
    global _plugins_loaded
    with _plugin_lock:
        if not _plugins_loaded or force:
            _plugins_loaded = True
            _conflicts.clear()
            _missing.clear()
            eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != BUILTIN_ENTRY_POINT, e.name))
            if not any(ep.name == BUILTIN_ENTRY_POINT for ep in eps):
                _missing.append(f"the built-in encoders are not installed: no {BUILTIN_ENTRY_POINT!r} entry point in the "
                              f"{ENTRY_POINT_GROUP!r} group (anybind's install metadata is missing or stale); install "
                              "anybind with pip install -e . (from a checkout) or pip install anybind")
            for ep in eps:
                _load_one(ep)
        if _loading:  # a plugin being imported registers something: its own conflicts are raised at its end
            return dict(_plugin_errors)
        if _conflicts:
            raise PluginConflictError("anybind plugin conflict: " + "\nanybind plugin conflict: ".join(_conflicts))
        if _missing:
            raise RegistryError("\n".join(_missing))
        return dict(_plugin_errors)


def ensure_loaded() -> None:
    """Run plugin discovery before a registration made outside it, so that the registration meets the names the
    built-ins and the plugins hold (a registration made while a plugin loads is checked as it goes)."""
    if not _loading and not _plugins_loaded:
        load_plugins()


def plugin_errors() -> dict[str, str]:
    """``{entry point name: error}`` for every plugin that failed to import (its names are missing). A name or
    extension conflict is not listed here: it raises :class:`PluginConflictError` instead."""
    return load_plugins()


def _entry(name: str) -> EncoderEntry:
    load_plugins()
    base = name.split(".", 1)[0]
    if base not in _ENCODERS:
        close = difflib.get_close_matches(base, list(_ENCODERS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_ENCODERS)) or 'none'}"
        if _plugin_errors:
            hint += f" (plugins that failed to load: {', '.join(sorted(_plugin_errors))}; see anybind.plugin_errors())"
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
