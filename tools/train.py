"""Train anybind models: a thin wrapper over :func:`anybind.train.recipe.main` (same as ``anybind-train``).

    python tools/train.py data.manifest=data/world/manifest.jsonl modality=[image,text,audio]
    torchrun --nproc_per_node=2 tools/train.py debug=smoke data.manifest=...
"""

from anybind.train.recipe import main

if __name__ == "__main__":
    main()
