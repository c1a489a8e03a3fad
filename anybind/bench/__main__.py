"""``python -m anybind.bench``: the same as ``anybind-bench``."""

from . import main

main()
