"""ImageBind-size latency and load memory (see anybind.bench.imagebind): ``python tools/bench_imagebind.py --repeats 3``."""

from anybind.bench.imagebind import main

if __name__ == "__main__":
    main()
