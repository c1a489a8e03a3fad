"""Index benchmark (see anybind.bench.index): ``python tools/bench_index.py --n 100000 --threads 2``."""

from anybind.bench.index import main

if __name__ == "__main__":
    main()
