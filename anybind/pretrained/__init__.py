"""Pretrained towers from model libraries (open_clip, timm): building, loading and provenance.

The towers themselves are registry encoders (``openclip_image``, ``openclip_text``, ``timm_image``); this package
holds what the core needs from them: :func:`from_open_clip` and the weight helpers of :mod:`.weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .weights import assign_state, deferred_weights, params_on_meta, weights_deferred, weights_source

__all__ = ["assign_state", "deferred_weights", "from_open_clip", "params_on_meta", "weights_deferred",
           "weights_source"]


def from_open_clip(model_name: str = "ViT-B-32", pretrained: str | Path | None = None, *,
                   tag: str | None = None, preprocess: dict[str, Any] | None = None,
                   model_cfg: dict[str, Any] | None = None):
    """An :class:`~anybind.AnyBindModel` with open_clip ``model_name``'s ``image`` and ``text`` towers.

    ``pretrained`` is a LOCAL open_clip checkpoint (a full CLIP state_dict, ``.safetensors`` or a torch file);
    ``None`` keeps open_clip's random initialisation. ``tag`` (an open_clip pretrained tag such as
    ``laion2b_s34b_b79k``) only selects that tag's preprocessing; ``preprocess`` overrides keys of it. The model's
    logit scale is ``model.encoders["text"].logit_scale`` (log space, as open_clip stores it).
    """
    from ..model import create_model

    common = {"model_name": model_name, **({"model_cfg": model_cfg} if model_cfg else {})}
    image = {"name": "openclip_image", **common, **({"tag": tag} if tag else {}),
             **({"preprocess": preprocess} if preprocess else {})}
    text = {"name": "openclip_text", **common}
    if pretrained is not None:
        image["pretrained"] = text["pretrained"] = str(pretrained)
    return create_model({"image": image, "text": text}).eval()
