"""Models for scoring tests: an *oracle* that knows each item's answer, and a random one.

The oracle is a real :class:`~anybind.model.AnyBindModel` run through the real readers, transforms and embedding
loop; only its towers are not learned. A media tower reduces its transformed input to a few numbers that the
miniature layouts vary by class (an audio clip's mean log-mel per bin, an image's or video's mean colour, a point
cloud's spread along each axis) and embeds it as the one-hot vector of the nearest class prototype, the prototypes
being the same reduction of one reference input per class. The text tower embeds a prompt as the one-hot vector of
the class name (the keyword) whose tokens it contains, the longest when several do. So every input lands exactly
on its class's prompt embedding: top-1 and R@1 are 1.0 unless the adapter or the pipeline loses or mislabels items.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

import anybind
from anybind.model import AnyBindModel
from anybind.modality import get_modality

TEST_ENCODERS = {"image": "image_vit_test", "text": "text_transformer_test", "audio": "audio_vit_test",
                 "points": "points_transformer_test", "video": "video_vit_test"}
DIM = 64


def reduce_input(modality: str, x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` transformed batch -> ``(B, F)`` numbers that tell the miniature classes apart."""
    if modality == "audio":  # (B, clips, 1, mels, frames): mean log-mel per bin
        return x.float().mean(dim=(1, 2, 4))
    if modality == "image":  # (B, 3, H, W)
        return x.float().mean(dim=(2, 3))
    if modality == "video":  # (B, clips, 3, T, H, W)
        return x.float().mean(dim=(1, 3, 4, 5))
    if modality == "points":  # (B, N, C): spread along each axis of the unit-sphere-normalized cloud
        return x[..., :3].float().std(dim=1)
    raise KeyError(modality)


class PrototypeTower(nn.Module):
    def __init__(self, modality: str, contract: dict, prototypes: torch.Tensor, embed_dim: int = DIM):
        super().__init__()
        self.modality, self.embed_dim, self.input_contract = modality, embed_dim, dict(contract)
        self.register_buffer("prototypes", prototypes.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = reduce_input(self.modality, x)
        nearest = torch.cdist(feats, self.prototypes).argmin(dim=1)
        return nn.functional.one_hot(nearest, self.embed_dim).float()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        pass


class KeywordTower(nn.Module):
    """Text -> one-hot of the keyword whose token ids appear (contiguously) in the prompt; zeros when none does."""

    def __init__(self, keywords: Sequence[str], contract: dict, embed_dim: int = DIM):
        super().__init__()
        self.modality, self.embed_dim, self.input_contract = "text", embed_dim, dict(contract)
        tokenize = get_modality("text").make_transform(contract)
        self.keys = []
        for k in keywords:
            ids = tokenize(k).tolist()
            self.keys.append(ids[1:ids.index(max(ids))])  # between start- and end-of-text
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(ids), self.embed_dim)
        for row, seq in enumerate(ids.tolist()):
            best, best_len = None, 0
            for j, key in enumerate(self.keys):
                n = len(key)
                if n > best_len and any(seq[i:i + n] == key for i in range(len(seq) - n + 1)):
                    best, best_len = j, n
            if best is not None:
                out[row, best] = 1.0
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        pass


def oracle_model(modality: str, references: Sequence[Any], keywords: Sequence[str]) -> AnyBindModel:
    """An oracle for ``modality``: ``references[i]`` (a file or array) is class/item ``i``, named ``keywords[i]``."""
    assert len(references) == len(keywords) <= DIM
    contract = anybind.create_encoder(TEST_ENCODERS[modality]).input_contract
    spec = get_modality(modality)
    transform = spec.make_transform(contract)
    protos = torch.cat([reduce_input(modality, transform(spec.load(r)[0])[None]) for r in references])
    text_contract = anybind.create_encoder(TEST_ENCODERS["text"]).input_contract
    return AnyBindModel({modality: PrototypeTower(modality, contract, protos),
                         "text": KeywordTower(keywords, text_contract)}, DIM)


def random_model(modality: str, seed: int = 0) -> AnyBindModel:
    torch.manual_seed(seed)
    return anybind.create_model({modality: TEST_ENCODERS[modality], "text": TEST_ENCODERS["text"]})
