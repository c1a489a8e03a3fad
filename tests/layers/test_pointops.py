import torch

from anybind.layers.pointops import farthest_point_sample, gather_points, knn_group, normalize_unit_sphere


def brute_force_fps(xyz: torch.Tensor, n: int) -> list[int]:
    chosen = [0]
    for _ in range(n - 1):
        d = torch.stack([((xyz - xyz[c]) ** 2).sum(-1) for c in chosen]).min(0).values
        chosen.append(int(d.argmax()))
    return chosen


def test_fps_matches_brute_force_and_is_batched():
    g = torch.Generator().manual_seed(0)
    xyz = torch.randn(3, 200, 3, generator=g)
    idx = farthest_point_sample(xyz, 17)
    assert idx.shape == (3, 17)
    for b in range(3):
        assert idx[b].tolist() == brute_force_fps(xyz[b], 17)
    assert farthest_point_sample(xyz[0], 17).tolist() == idx[0].tolist()


def test_fps_picks_extremes_first():
    # two far clusters: the second pick must come from the other cluster
    a = torch.randn(50, 3) * 0.01
    b = torch.randn(50, 3) * 0.01 + 10
    idx = farthest_point_sample(torch.cat([a, b]), 2)
    assert idx[0] == 0 and idx[1] >= 50


def test_fps_wraps_when_asking_for_more_points_than_exist():
    xyz = torch.randn(5, 3)
    idx = farthest_point_sample(xyz, 12)
    assert idx.shape == (12,)
    assert sorted(set(idx.tolist())) == list(range(5))


def test_knn_and_gather():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [5, 0, 0], [6, 0, 0]]])
    centres = torch.tensor([[[0.2, 0, 0], [5.8, 0, 0]]])
    idx = knn_group(xyz, centres, 2)
    assert sorted(idx[0, 0].tolist()) == [0, 1] and sorted(idx[0, 1].tolist()) == [2, 3]
    pts = gather_points(xyz, idx)
    assert pts.shape == (1, 2, 2, 3)
    torch.testing.assert_close(pts[0, 1].sort(0).values[:, 0], torch.tensor([5.0, 6.0]))


def test_normalize_unit_sphere():
    xyz = torch.randn(100, 3) * 7 + 3
    n = normalize_unit_sphere(xyz)
    torch.testing.assert_close(n.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert abs(n.norm(dim=-1).max().item() - 1) < 1e-5


def reference_fps(xyz: torch.Tensor, n: int, start=0) -> torch.Tensor:
    """The straightforward batched loop (a (B, N, 3) difference summed over its last dimension)."""
    B, N, _ = xyz.shape
    idx = torch.empty(B, n, dtype=torch.long)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype)
    cur = torch.as_tensor(start).expand(B).clone()
    for i in range(n):
        idx[:, i] = cur
        dist = torch.minimum(dist, (xyz - xyz[torch.arange(B), cur].unsqueeze(1)).pow(2).sum(-1))
        cur = dist.argmax(dim=-1)
    return idx


def test_fps_picks_exactly_what_the_reference_loop_picks():
    # long runs (512 of 1024) accumulate every rounding difference: the picks must still be identical
    g = torch.Generator().manual_seed(1)
    xyz = normalize_unit_sphere(torch.randn(4, 1024, 3, generator=g) * torch.tensor([1.0, 0.3, 2.0]))
    for n in (64, 512):
        assert torch.equal(farthest_point_sample(xyz, n), reference_fps(xyz, n))
    starts = torch.tensor([0, 5, 17, 1023])
    assert torch.equal(farthest_point_sample(xyz, 40, start=starts), reference_fps(xyz, 40, starts))
    x64 = xyz.double()
    assert torch.equal(farthest_point_sample(x64, 100), reference_fps(x64, 100))
