"""Zero-shot classification through the text tower, for any modality.

::

    import anybind
    from anybind import zero_shot

    model = anybind.load("runs/x/checkpoints/last")
    weights = zero_shot.classifier(model, ["dog", "rain", "church bells"], ["a sound of {}.", "the sound of {}."])
    top = zero_shot.classify(model, {"audio": ["a.wav", "b.wav"]}, weights, k=5)
    top.indices[:, 0]  # the best class of each clip

:func:`classifier` embeds every (class name x template) prompt in one batched pass through the text tower and
averages each class's prompt embeddings (then renormalizes): the class vectors of a linear classifier.
:func:`classify` embeds inputs of any modality (or takes embeddings already made) and ranks the classes by
cosine similarity.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Classification", "classifier", "classify", "prompts"]


class Classification(NamedTuple):
    """``indices`` ``(N, k)`` of the best classes per input, best first; ``scores`` their cosine similarities."""

    indices: torch.Tensor
    scores: torch.Tensor


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every prompt, class-major: ``[t.format(c) for c in classnames for t in templates]``.

    A template holds one ``{}`` (the class name); one without it would give the same prompt for every class.
    """
    if not templates:
        raise ValueError("zero-shot needs at least one template, e.g. ['a photo of a {}.']")
    if not classnames:
        raise ValueError("zero-shot needs at least one class name")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"template {bad[0]!r} has no '{{}}' for the class name (every template needs one)")
    return [t.format(c) for c in classnames for t in templates]


@torch.no_grad()
def classifier(model, classnames: Sequence[str], templates: Sequence[str], *, batch_size: int = 256,
               num_workers: int = 0, autocast: bool = False) -> torch.Tensor:
    """``(C, D)`` unit vectors, one per class: the normalized mean of its prompts' text embeddings."""
    if "text" not in model.modalities:
        raise ValueError(f"zero-shot classification needs a text tower; the model has {', '.join(model.modalities)}")
    texts = prompts(classnames, templates)
    z = model.embed({"text": texts}, batch_size=batch_size, num_workers=num_workers, progress=False,
                    autocast=autocast)["text"]
    z = z.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(z, dim=-1)


@torch.no_grad()
def classify(model, inputs: Mapping[str, Sequence[Any]] | torch.Tensor, classifier: torch.Tensor, k: int = 5, *,
             batch_size: int = 32, num_workers: int = 0, autocast: bool = False) -> Classification:
    """Rank the classes of ``classifier`` for each input: the ``k`` best (capped at the number of classes).

    ``inputs`` is ``{modality: [paths, strings, arrays or tensors]}`` (one modality) or an ``(N, D)`` tensor of
    embeddings already made (``model`` is then unused and may be ``None``).
    """
    if isinstance(inputs, torch.Tensor):
        emb = inputs
    else:
        if len(inputs) != 1:
            raise ValueError(f"classify takes one modality at a time, got {', '.join(inputs) or 'none'}")
        (modality, items), = inputs.items()
        emb = model.embed({modality: items}, batch_size=batch_size, num_workers=num_workers, progress=False,
                          autocast=autocast)[modality]
    if emb.shape[-1] != classifier.shape[-1]:
        raise ValueError(f"embeddings have {emb.shape[-1]} dims, the classifier {classifier.shape[-1]}")
    sims = F.normalize(emb.float(), dim=-1) @ F.normalize(classifier.float(), dim=-1).T
    scores, indices = sims.topk(min(k, classifier.shape[0]), dim=1)
    return Classification(indices, scores)
