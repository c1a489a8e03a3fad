"""Training samples/s and peak memory as modalities are bound to the image anchor (see anybind.bench.train).

    python tools/bench_train.py                       # default tiny configuration, batch 16
    python tools/bench_train.py --preset world --batch-size 32 --json out.json

``anybind-bench train`` runs this scan together with the batch-size scan and the step breakdown.
"""

from anybind.bench.train import bench_train_main

if __name__ == "__main__":
    bench_train_main()
