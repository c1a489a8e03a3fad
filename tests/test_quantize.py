"""Dynamic int8 for Linear layers: a copy, close to float32, and its Linear layers are really int8."""

from __future__ import annotations

import torch

import anybind
from anybind.quantize import quantize_dynamic_int8


def test_int8_copy_is_close_and_leaves_the_tower_alone():
    torch.manual_seed(0)
    tower = anybind.create_encoder("image_vit_test").eval()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    q = quantize_dynamic_int8(tower)
    x = torch.randn(4, *tower_input_shape(tower))
    with torch.inference_mode():
        a, b = tower(x), q(x)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert a.shape == b.shape and float(cos.min()) > 0.98 and not torch.equal(a, b)
    assert all(torch.equal(v, tower.state_dict()[k]) for k, v in before.items())  # the original is unchanged
    kinds = {type(m).__module__ for m in q.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds) and not any(isinstance(m, torch.nn.Linear) and
                                                            type(m) is torch.nn.Linear for m in q.modules())


def tower_input_shape(tower):
    s = tower.input_contract["image_size"]
    return (3, s, s)
