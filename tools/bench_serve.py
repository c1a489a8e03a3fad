"""Load test of anybind-serve on loopback: 16 clients x 30 s of text queries, then audio uploads, against a
100k-item index; and one query over HTTP against the same work in-process (``anybind.serve.bench``).

    python tools/bench_serve.py                           # the figures of docs/benchmarks.md, "Service"
    python tools/bench_serve.py --duration 5 --n 10000    # a quick look
"""

from anybind.serve.bench import main

if __name__ == "__main__":
    main()
