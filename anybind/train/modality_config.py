"""The ``modality.<m>`` nodes of a training config: one per trained tower.

The schema (:class:`~anybind.train.config.TrainConfig`) holds them as plain nodes, so that the command line can add
a tower for any registered modality, with or without a ``modality/<m>.yaml`` in a config tree::

    anybind-train modality=[image] +modality.timeseries.encoder=timeseries_mlp_tiny

(OmegaConf cannot make a typed node from a command-line key.) :func:`typed_modalities` then gives every node the
:class:`~anybind.train.config.ModalityConfig` schema: the defaults of ``kwargs``, ``tune`` and ``augment`` filled,
a misspelled key or a wrong type named by its full key.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import ModalityConfig

MODALITY_KEYS = ("encoder", "kwargs", "tune", "augment")


def typed_modalities(cfg: DictConfig) -> DictConfig:
    """Check each ``cfg.modality.<m>`` against :class:`ModalityConfig` in place (interpolations kept); returns
    ``cfg``. Raises ``ValueError`` naming ``modality.<m>.<key>`` for a node the schema refuses."""
    for m in list(cfg.modality):
        node = cfg.modality._get_node(m)
        if not isinstance(node, DictConfig):
            raise ValueError(f"modality.{m} must be a mapping with {', '.join(MODALITY_KEYS)}, got {node!r}; "
                             f"use modality.{m}.encoder=<name> (or +modality.{m}.encoder=<name> to add it)")
        try:
            typed = OmegaConf.merge(OmegaConf.structured(ModalityConfig), node)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "") or ""
            problem = str(exc).splitlines()[0]
            raise ValueError(f"modality.{m}{'.' + key if key else ''}: {problem} (a modality node holds "
                             f"{', '.join(MODALITY_KEYS)}; see conf/modality/image.yaml)") from None
        cfg.modality[m] = typed
    return cfg
