"""Any-to-any search: ``python tools/search.py --index runs/emb/index --query image:cat.png -k 10``."""

from anybind.retrieval.cli import search_main

if __name__ == "__main__":
    search_main()
