"""Evaluation: retrieval and zero-shot metrics, manifests, and the field's benchmarks from local copies.

* :mod:`anybind.eval.metrics`: ranks, R@K, zero-shot top-k, chance levels, confusion matrices;
* :mod:`anybind.eval.embedding`: a manifest embedded per modality (the one loop of :mod:`anybind.embedding`);
* :mod:`anybind.eval.manifest`: ``anybind-eval manifest=...``: the retrieval matrix and zero-shot of a manifest;
* :mod:`anybind.eval.benchmarks` and :mod:`anybind.eval.run`: ``anybind-eval benchmark=<name>``;
* :mod:`anybind.eval.report` and :mod:`anybind.eval.plots`: ``metrics.json``, provenance, tables and figures.

:mod:`anybind.evaluate` and :mod:`anybind.retrieval.evaluation` are other names for parts of this package.
"""

from .embedding import embed_manifest
from .errors import BenchmarkError, EvaluationError
from .manifest import evaluate_manifest, evaluate_model, trained_pairs_from_meta
from .metrics import (chance_curve, chance_recall, confusion_matrix, first_hit_ranks, retrieval_metrics,
                      zero_shot_metrics)
from .plots import plot_confusion_matrix, plot_recall_curves, plot_retrieval_heatmap
from .report import format_metrics, write_metrics

__all__ = [
    "BenchmarkError", "EvaluationError", "chance_curve", "chance_recall", "confusion_matrix", "embed_manifest",
    "evaluate_manifest", "evaluate_model", "first_hit_ranks", "format_metrics", "plot_confusion_matrix",
    "plot_recall_curves", "plot_retrieval_heatmap", "retrieval_metrics", "trained_pairs_from_meta", "write_metrics",
    "zero_shot_metrics",
]
