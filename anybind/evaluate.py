"""``anybind.evaluate``: another name for the evaluation package :mod:`anybind.eval` (retrieval and zero-shot
metrics, manifest embedding, ``metrics.json``, plots), as training and notebooks import it. It defines nothing
itself; see :mod:`anybind.eval.metrics` for the definitions."""

from .eval import (embed_manifest, evaluate_model, first_hit_ranks, plot_retrieval_heatmap, retrieval_metrics,
                   write_metrics, zero_shot_metrics)

__all__ = ["embed_manifest", "evaluate_model", "first_hit_ranks", "plot_retrieval_heatmap", "retrieval_metrics",
           "write_metrics", "zero_shot_metrics"]
