"""anybind's Hydra SearchPathPlugin: the config trees of installed anybind plugins join anybind's search path.

Hydra imports every module under the ``hydra_plugins`` namespace package at start-up, so this one stays light: the
work (reading the ``anybind.configs`` entry points) happens only when Hydra builds a search path, and only for a
search path that holds anybind's own ``pkg://conf``. See ``anybind.train.plugin_configs`` and docs/plugins.md.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class AnybindPluginConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from anybind.train.plugin_configs import add_plugin_configs

        add_plugin_configs(search_path)
