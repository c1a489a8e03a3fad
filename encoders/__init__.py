"""anybind's built-in encoders, one module per modality.

This package is advertised under the ``anybind.encoders`` entry-point group exactly as a plugin would be;
importing it imports every module beside this file, whose ``@register_encoder`` builders then register.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
