"""Config trees that plugin packages ship, found through the ``anybind.configs`` entry-point group.

A plugin advertises a package that holds a Hydra config tree laid out like anybind's own ``conf``
(``modality/<name>.yaml``, ``experiment/<name>.yaml`` ...)::

    [project.entry-points."anybind.configs"]
    timeseries = "anybind_plugin_demo.conf"     # or "pkg://anybind_plugin_demo.conf", or "file:///abs/conf/dir"

``hydra_plugins/anybind_configs.py`` (source in ``anybind/_hydra``; a Hydra SearchPathPlugin that anybind ships; Hydra discovers it by itself)
calls :func:`add_plugin_configs` whenever a command composes a config from anybind's ``pkg://conf``: each tree is
appended to the search path after anybind's, so ``anybind-train modality=[image,timeseries]`` finds
``modality/timeseries.yaml`` with no ``hydra.searchpath``. A YAML file that anybind's tree (or an earlier plugin's)
already has would be shadowed without a word; it raises :class:`~anybind.registry.PluginConflictError` naming both.
A tree that cannot be found is skipped with a warning. This module imports only the standard library: Hydra loads
it at the start of every Hydra application.
"""

from __future__ import annotations

import importlib.resources
import warnings
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Iterator

CONFIG_ENTRY_POINT_GROUP = "anybind.configs"
ANYBIND_CONF = "pkg://conf"  # anybind's own tree (the config_path of every anybind command)


def search_path_of(ep: EntryPoint) -> str:
    """The Hydra search-path entry an ``anybind.configs`` entry point names: ``pkg://<package>`` or ``file://``."""
    value = ep.value.strip()
    return value if value.startswith(("pkg://", "file://")) else f"pkg://{value}"


def _walk(node: Any, prefix: str = "") -> Iterator[str]:
    for child in node.iterdir():
        if child.is_dir():
            if not child.name.startswith(("_", ".")):
                yield from _walk(child, f"{prefix}{child.name}/")
        elif child.name.endswith((".yaml", ".yml")):
            yield prefix + child.name


def yaml_files(path: str) -> set[str]:
    """The config files (``group/name.yaml``) under a ``pkg://`` or ``file://`` search-path entry."""
    if path.startswith("file://"):
        root: Any = Path(path[len("file://"):])
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
    else:
        root = importlib.resources.files(path[len("pkg://"):].replace("/", "."))
    return set(_walk(root))


def plugin_config_trees() -> list[tuple[str, str, str]]:
    """``(provider, search path, owner)`` of each ``anybind.configs`` entry point, in name order."""
    trees = []
    for ep in sorted(entry_points(group=CONFIG_ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        where = f" ({dist.name} {dist.version})" if dist is not None else ""
        trees.append((f"anybind-plugin-{ep.name}", search_path_of(ep),
                      f"plugin entry point {ep.group}:{ep.name} = {ep.value}{where}"))
    return trees


def add_plugin_configs(search_path: Any) -> None:
    """Append every plugin config tree to a Hydra ``ConfigSearchPath`` that holds anybind's own ``pkg://conf``
    (other Hydra applications are left alone)."""
    if not any(element.path == ANYBIND_CONF for element in search_path.get_path()):
        return
    trees = plugin_config_trees()
    if not trees:
        return
    held = dict.fromkeys(yaml_files(ANYBIND_CONF), "anybind's own configs (pkg://conf)")
    for provider, path, owner in trees:
        try:
            files = yaml_files(path)
        except (ImportError, OSError, TypeError, ValueError) as exc:
            warnings.warn(f"anybind: the config tree {path} of {owner} is not there ({type(exc).__name__}: {exc}); "
                          "its configs are skipped", stacklevel=2)
            continue
        clash = sorted(f for f in files if f in held)
        if clash:
            from ..registry import PluginConflictError

            raise PluginConflictError(
                f"anybind plugin conflict: config {clash[0]!r} is already provided by {held[clash[0]]}; {owner} ships "
                f"it again in {path}{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}: rename the plugin's "
                "file (name configs after the plugin's modality or encoders)")
        held.update(dict.fromkeys(files, owner))
        search_path.append(provider, path)
