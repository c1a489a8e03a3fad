"""``python -m anybind.serve --index DIR --checkpoint PATH``: the same as ``anybind-serve``."""

from .cli import main

if __name__ == "__main__":
    main()
