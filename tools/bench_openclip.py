"""OpenCLIP files -> embeddings throughput, anybind vs the plain open_clip loop (see anybind.bench.openclip):
``python tools/bench_openclip.py --model ViT-B-32 --images 256 --workers 0,2``."""

from anybind.bench.openclip import main

if __name__ == "__main__":
    main()
