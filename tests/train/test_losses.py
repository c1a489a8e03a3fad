import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from anybind.losses import ContrastiveLoss, infonce_loss, pair_name, siglip_loss

HERE = Path(__file__).resolve().parent


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def clip_reference(a, b, scale):
    logits = scale * a @ b.T
    t = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def test_infonce_matches_clip_formula():
    a, b = unit(6, 4, 0), unit(6, 4, 1)
    scale = torch.tensor(7.0)
    loss, n = infonce_loss(a, b, scale)
    assert int(n) == 6
    torch.testing.assert_close(loss, clip_reference(a, b, scale))


def test_infonce_ignores_invalid_rows_and_columns():
    a, b = unit(7, 4, 2), unit(7, 4, 3)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    garbage_a, garbage_b = a.clone(), b.clone()
    garbage_a[~valid] = 1e3  # must have no influence at all
    garbage_b[~valid] = -1e3
    loss, n = infonce_loss(garbage_a, garbage_b, torch.tensor(5.0), valid)
    assert int(n) == 5
    torch.testing.assert_close(loss, clip_reference(a[valid], b[valid], 5.0))


def test_siglip_matches_pairwise_sigmoid_formula():
    a, b = unit(5, 3, 4), unit(5, 3, 5)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    logits = scale * a @ b.T + bias
    labels = 2 * torch.eye(5) - 1
    expected = -F.logsigmoid(labels * logits).sum() / 5
    loss, _ = siglip_loss(a, b, scale, bias)
    torch.testing.assert_close(loss, expected)


def test_temperature_is_learnable_and_clamped_at_100():
    loss = ContrastiveLoss([("image", "audio")], init_temperature=0.07)
    a, b = unit(4, 3, 6).requires_grad_(), unit(4, 3, 7)
    out = loss({"image": a, "audio": b})
    out.loss.backward()
    p = loss.log_scale["image-audio"]
    assert p.grad is not None and p.grad.abs() > 0
    assert math.isclose(loss.temperatures()["image-audio"], 0.07, rel_tol=1e-5)
    with torch.no_grad():
        p.fill_(10.0)  # exp(10) >> 100
    assert math.isclose(float(loss.logit_scale("image-audio").detach()), 100.0, rel_tol=1e-5)
    loss.clamp_()
    assert math.isclose(float(p.detach()), math.log(100.0), rel_tol=1e-6)


def test_pairs_are_weighted_and_absent_pairs_skipped():
    a, b, c = unit(4, 3, 8), unit(4, 3, 9), unit(4, 3, 10)
    loss = ContrastiveLoss([("image", "audio"), ("image", "text")], weights={"image-text": 0.25})
    out = loss({"image": a, "audio": b, "text": c})
    torch.testing.assert_close(out.loss, out.pairs["image-audio"] + 0.25 * out.pairs["image-text"])
    only = loss({"image": a, "audio": b})
    assert set(only.pairs) == {pair_name("image", "audio")}
    with pytest.raises(ValueError, match="not trained"):
        ContrastiveLoss([("image", "audio")], weights={"image-depth": 1.0})


def test_two_process_gather_equals_one_process(tmp_path, torchrun_env):
    """torchrun --nproc_per_node=2 (gloo) gives the loss and gradients of one process on the global batch."""
    out_file = tmp_path / "dist.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "dist_loss_worker.py"), str(out_file)]
    proc = subprocess.run(cmd, env=torchrun_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from safetensors.torch import load_file

    got = load_file(str(out_file))
    spec = importlib.util.spec_from_file_location("dist_loss_worker", HERE / "dist_loss_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    inputs, valid = worker.global_batch()
    for kind in ("infonce", "siglip"):
        model = worker.Binder(kind)
        out = model(inputs, valid)
        out.loss.backward()
        torch.testing.assert_close(got[f"{kind}.loss"][0], out.loss.detach(), atol=1e-5, rtol=0)
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert grads["loss.log_scale.image-audio"].abs() > 0
        for name, g in grads.items():
            torch.testing.assert_close(got[f"{kind}.grad.{name}"], g, atol=1e-5, rtol=0, msg=f"{kind} {name}")
