"""Point-cloud operations in pure PyTorch (CPU or CUDA, no compiled extension).

* :func:`farthest_point_sample`: iterative FPS, vectorized over the batch: ``O(S * N)`` per cloud.
* :func:`knn_group`: k nearest neighbours of each centre through one ``cdist`` + ``topk``.
* :func:`normalize_unit_sphere`: centre on the centroid and scale the farthest point to radius 1.
"""

from __future__ import annotations

import torch


def normalize_unit_sphere(xyz: torch.Tensor) -> torch.Tensor:
    """``(..., N, 3)`` -> centred on the mean, scaled so the farthest point lies on the unit sphere."""
    centred = xyz - xyz.mean(dim=-2, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return centred / radius.unsqueeze(-1)


def farthest_point_sample(xyz: torch.Tensor, num_samples: int, *, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Indices ``(B, S)`` of ``num_samples`` points chosen by farthest-point sampling from ``xyz`` ``(B, N, 3)``.

    Deterministic: the first pick is ``start`` (index 0 by default). When ``num_samples > N`` the picks wrap
    around (every point once, then again in the same order).
    """
    squeeze = xyz.ndim == 2
    if squeeze:
        xyz = xyz.unsqueeze(0)
    B, N, _ = xyz.shape
    if N == 0:
        raise ValueError("farthest_point_sample needs at least one point")
    S = min(num_samples, N)
    # One (B, N) plane per coordinate and preallocated buffers: each of the S steps is a few contiguous
    # element-wise kernels instead of a (B, N, 3) difference reduced over its size-3 last dimension (3-4x faster
    # on CPU). The squared distance is still (dx^2 + dy^2) + dz^2, rounded as before: the picks are identical.
    planes = xyz.transpose(1, 2).contiguous()  # (B, 3, N)
    x, y, z = planes.unbind(1)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    d, t = torch.empty_like(dist), torch.empty_like(dist)
    cur = torch.as_tensor(start, device=xyz.device).expand(B).clone()
    ar = torch.arange(B, device=xyz.device)
    picks = []
    for _ in range(S):
        picks.append(cur)
        c = planes[ar, :, cur]  # (B, 3): the current pick of every cloud
        torch.sub(x, c[:, 0:1], out=d).square_()
        d.add_(torch.sub(y, c[:, 1:2], out=t).square_())
        d.add_(torch.sub(z, c[:, 2:3], out=t).square_())
        torch.minimum(dist, d, out=dist)
        cur = dist.argmax(dim=-1)
    idx = torch.stack(picks, 1)
    if num_samples > N:
        idx = idx.repeat(1, -(-num_samples // N))[:, :num_samples]
    return idx.squeeze(0) if squeeze else idx


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``points (B, N, C)``, ``idx (B, ...)`` -> ``(B, ..., C)``."""
    B = points.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.view(*idx.shape, points.shape[-1])


def knn_group(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, G, k)`` of the ``k`` points of ``xyz (B, N, 3)`` nearest to each of ``centres (B, G, 3)``."""
    d = torch.cdist(centres, xyz)
    return d.topk(min(k, xyz.shape[1]), dim=-1, largest=False).indices
