"""Retrieval and zero-shot metrics and ``metrics.json``: a re-export of :mod:`anybind.eval` (kept so that
``from anybind.evaluate import ...`` keeps working). See :mod:`anybind.eval.metrics` for the definitions."""

from .eval.embedding import embed_manifest
from .eval.manifest import evaluate_model
from .eval.metrics import first_hit_ranks, retrieval_metrics, zero_shot_metrics
from .eval.plots import plot_retrieval_heatmap
from .eval.report import write_metrics

__all__ = ["embed_manifest", "evaluate_model", "first_hit_ranks", "plot_retrieval_heatmap", "retrieval_metrics",
           "write_metrics", "zero_shot_metrics"]
