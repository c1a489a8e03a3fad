"""anybind-embed on real files (see anybind.bench.embed_files):
``python tools/bench_embed_files.py --cases image,text,audio,digits_audio --workers 0,1 --repeats 3``."""

from anybind.bench.embed_files import main

if __name__ == "__main__":
    main()
