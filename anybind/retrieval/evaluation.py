"""``anybind.retrieval.evaluation``: another name for the manifest evaluation of :mod:`anybind.eval.manifest`
(and :func:`~anybind.eval.report.format_metrics`), as the retrieval docs import it. It defines nothing itself."""

from ..eval.manifest import (DEFAULT_TEMPLATES, class_embeddings, evaluate_manifest, labels_look_like_classes,
                             resolve_split, row_key, store_embeddings, trained_pairs_from_meta, zero_shot)
from ..eval.report import format_metrics

__all__ = ["DEFAULT_TEMPLATES", "class_embeddings", "evaluate_manifest", "format_metrics", "labels_look_like_classes",
           "resolve_split", "row_key", "store_embeddings", "trained_pairs_from_meta", "zero_shot"]
