import math

import pytest
import torch

from anybind.layers import Attention, Transformer


def reference_attention(attn: Attention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Explicit softmax attention, written independently of scaled_dot_product_attention."""
    B, L, C = x.shape
    h, d = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    if attn.bias_k is not None:
        k = torch.cat([k, attn.bias_k.expand(B, 1, C)], 1)
        v = torch.cat([v, attn.bias_v.expand(B, 1, C)], 1)
    q = q.view(B, L, h, d).transpose(1, 2)
    k = k.view(B, -1, h, d).transpose(1, 2)
    v = v.view(B, -1, h, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:
        allowed = torch.ones(L, k.shape[2], dtype=torch.bool).tril()
        allowed[:, L:] = True
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(B, L, C))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias_kv", [False, True])
def test_attention_matches_explicit_softmax(causal, bias_kv):
    torch.manual_seed(0)
    attn = Attention(16, 4, bias_kv=bias_kv)
    if bias_kv:
        torch.nn.init.normal_(attn.bias_k)
        torch.nn.init.normal_(attn.bias_v)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(attn(x, causal=causal), reference_attention(attn, x, causal), rtol=1e-5, atol=1e-5)


def test_causal_transformer_ignores_future_tokens():
    torch.manual_seed(0)
    t = Transformer(16, 2, 2, causal=True).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)  # change only the future
    torch.testing.assert_close(t(x)[:, :4], t(y)[:, :4])
    assert not torch.allclose(t(x)[:, 4:], t(y)[:, 4:])


def test_grad_checkpointing_same_output_and_grads():
    torch.manual_seed(0)
    t = Transformer(16, 3, 2).eval()
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = t(x)
    out.sum().backward()
    g = x.grad.clone()
    x.grad = None
    t.set_grad_checkpointing(True)
    out2 = t(x)
    out2.sum().backward()
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(g, x.grad)


def test_width_must_divide_heads():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)


def test_drop_path_only_in_training():
    t = Transformer(8, 4, 2, drop_path=0.5)
    x = torch.randn(16, 3, 8)
    t.eval()
    torch.testing.assert_close(t(x), t(x))
    t.train()
    torch.manual_seed(0)
    a = t(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, t(x))
