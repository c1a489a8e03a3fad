"""Index benchmark (see anybind.retrieval.bench): ``python tools/bench_index.py --n 100000 --threads 2``."""

from anybind.retrieval.bench import main

if __name__ == "__main__":
    main()
