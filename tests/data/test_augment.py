"""Training augmentations: off by default, each op does what it says, seeded draws, manifest and shard paths."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import anybind
from anybind.data.augment import make_augment, sample_generator
from anybind.data.augmented import augment_manifest_data
from anybind.data.dataset import ManifestDataset
from anybind.data.manifest import load_manifest
from anybind.data.sampling import MixedBatchSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from tinydata import make_tiny_dataset  # noqa: E402


def g(seed=0):
    return sample_generator(seed)


def test_nothing_configured_means_no_augmentation():
    from anybind.train.recipe import compose_train_config

    assert make_augment("image", {}) is None and make_augment("audio", None) is None
    cfg = compose_train_config(["data.manifest=x.jsonl"])
    assert all(not cfg.modality[m].augment for m in cfg.modality)
    with pytest.raises(ValueError, match="unknown keys \\['gian_db'\\]"):
        make_augment("audio", {"gian_db": 3})
    with pytest.raises(ValueError, match="no augmentations exist for 'text'"):
        make_augment("text", {"flip": 0.5})


def test_image_flip_and_crop():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)  # also a (frames, C, H, W) video
    assert torch.equal(make_augment("image", {"flip": 1.0})(x, g()), x.flip(-1))
    crop = make_augment("image", {"crop_scale": [0.25, 0.5]})
    y = crop(x, g())
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(y, crop(x, g())) and not torch.equal(y, crop(x, g(1)))  # seeded


def test_audio_gain_shift_and_masks():
    x = torch.randn(3, 1, 16, 40)
    std = 9.138
    y = make_augment("audio", {"gain_db": 6}, {"std": std})(x, g())
    offset = (y - x).unique()
    assert torch.allclose(y - x, (y - x)[0, 0, 0, 0].expand_as(x), atol=1e-6)
    assert 0 < abs(float(offset[0])) <= 6 * math.log(10) / 10 / std + 1e-6
    m = make_augment("audio", {"freq_masks": 2, "freq_width": 4, "time_masks": 2, "time_width": 6})(x, g(3))
    assert (m == 0).any() and m.shape == x.shape
    s = make_augment("audio", {"time_shift": 0.25})(x, g(4))
    assert any(torch.equal(s, x.roll(k, -1)) for k in range(-10, 11))


def test_audio_freq_warp_and_time_stretch():
    from anybind.data.augment import resample_axis

    x = torch.randn(2, 1, 16, 40)
    assert torch.allclose(resample_axis(x, 2, 1.0), x)
    half = resample_axis(x, 3, 2.0, fill=7.0)  # twice as fast: frame j reads frame 2j, the second half is padding
    assert torch.allclose(half[..., :20], x[..., 0::2]) and (half[..., 20:] == 7.0).all()
    slow = resample_axis(x, 3, 0.5)  # half speed: frame 2j is frame j, odd frames interpolate
    assert torch.allclose(slow[..., 0::2], x[..., :20]) and torch.allclose(slow[..., 1:39:2], (x[..., :19] + x[..., 1:20]) / 2)
    up = resample_axis(x, 2, 0.5)  # the spectrum moved up: bin 2i holds bin i
    assert torch.allclose(up[..., 0::2, :], x[..., :8, :])
    down = resample_axis(x, 2, 2.0)  # moved down: the top half repeats the top bin
    assert torch.allclose(down[..., :8, :], x[..., 0::2, :])
    assert torch.allclose(down[..., 8:, :], x[..., 15:, :].expand(2, 1, 8, 40))

    contract = {"mean": -4.0, "std": 4.0}
    w = make_augment("audio", {"freq_warp": [1.2, 1.2]}, contract)(x, g())
    assert torch.allclose(w, resample_axis(x, 2, 1 / 1.2))
    s = make_augment("audio", {"time_stretch": [1.25, 1.25]}, contract)(x, g())
    quiet = x.amin(dim=-1, keepdim=True)  # past the end: each band's quietest frame
    assert torch.allclose(s, resample_axis(x, 3, 1.25, fill=quiet)) and torch.equal(s[..., -1:], quiet)
    both = make_augment("audio", {"freq_warp": [0.9, 1.1], "time_stretch": [0.9, 1.1]}, contract)
    assert torch.equal(both(x, g(5)), both(x, g(5))) and not torch.equal(both(x, g(5)), both(x, g(6)))
    assert not torch.allclose(both(x, g(5)), x)


def test_audio_level_keeps_silence_and_padding():
    from anybind.data.transforms.audio import LogMelTransform

    t = LogMelTransform(sample_rate=8000, num_mel_bins=32, target_length=110, clip_duration=1.0, clips=1)
    wave = torch.zeros(8000)
    wave[2000:5000] = 0.1 * torch.sin(torch.arange(3000) * 0.3)  # a tone between two stretches of digital silence
    x = t(wave)
    contract = {"mean": t.mean, "std": t.std}
    loud = wave * 10 ** (6 / 20)  # the same recording 6 dB louder, through the transform
    aug = make_augment("audio", {"level_db": 6}, contract)
    for seed in range(40):  # a draw near +6 dB gives (almost) the louder recording's spectrogram
        y = aug(x, g(seed))
        silent = x <= (math.log(torch.finfo(torch.float32).eps) - t.mean) / t.std + 1e-4
        assert torch.equal(y[silent], x[silent]) and torch.equal(y[..., 98:], x[..., 98:])  # floor and padding kept
    above = ~silent
    above[..., 98:] = False  # cells above the floor, outside the padding: a louder recording moves them by the same log-energy offset
    best = min((aug(x, g(s)) - t(loud))[above].abs().amax().item() for s in range(200))
    assert best < 0.01 and (t(loud) - x)[above].abs().amin().item() > 0.1


def test_points_rotate_scale_jitter_dropout():
    x = torch.randn(64, 6)
    r = make_augment("points", {"rotate": True})(x, g())
    assert torch.allclose(r[:, 1], x[:, 1]) and torch.allclose(r[:, :3].norm(dim=1), x[:, :3].norm(dim=1), atol=1e-5)
    assert torch.equal(r[:, 3:], x[:, 3:]) and not torch.allclose(r, x)
    d = make_augment("points", {"dropout": 0.5})(x, g(2))
    assert d.shape == x.shape and (d == x[0]).all(dim=1).sum() > 1
    j = make_augment("points", {"jitter": 0.01, "scale": [0.8, 1.25]})(x, g())
    assert 0 < (j[:, :3] - x[:, :3]).abs().max() < 1.0


def test_manifest_path_seeded_by_epoch_and_sample(tmp_path):
    manifest = make_tiny_dataset(tmp_path, n=8, modalities=("image", "points"))
    model = anybind.create_model({"image": "image_vit_test", "points": "points_transformer_test"})
    ds = ManifestDataset(load_manifest(manifest), {m: model.input_contract(m) for m in ("image", "points")})
    sampler = MixedBatchSampler([("image", "points")] * 8, ("image", "points"), 4)
    aug, tagged = augment_manifest_data(ds, sampler, {"image": {"flip": 0.5, "crop_scale": [0.5, 1]},
                                                     "points": {"rotate": True}}, seed=0)
    items = next(iter(tagged))
    assert len(items[0]) == 4 and items[0][3] == 0 and len(tagged) == 2
    a, b = aug[items[0]], aug[items[0]]
    plain = ds[items[0][:3]]
    assert torch.equal(a["inputs"]["points"], b["inputs"]["points"])  # same epoch and sample: same draws
    assert not torch.equal(a["inputs"]["points"], plain["inputs"]["points"])
    later = aug[(*items[0][:3], 1)]
    assert not torch.equal(later["inputs"]["points"], a["inputs"]["points"])  # a new epoch draws anew
    assert torch.equal(aug[items[0][:3]]["inputs"]["image"], plain["inputs"]["image"])  # untagged: no augmentation


def test_shard_stream_augments_deterministically(tmp_path):
    from anybind.data.shards import write_shards
    from anybind.data.shards.sources import source_from_config
    from anybind.data.shards.stream import ShardStream

    manifest = make_tiny_dataset(tmp_path / "raw", n=4, modalities=("image", "points"))
    write_shards(manifest, tmp_path / "s", progress=False)
    model = anybind.create_model({"image": "image_vit_test", "points": "points_transformer_test"})
    contracts = {m: model.input_contract(m) for m in ("image", "points")}

    def first(augment):
        s = ShardStream([source_from_config({"shards": str(tmp_path / "s")})], contracts, [("image", "points")], 4,
                        shuffle_buffer=0, augment=augment)
        return next(iter(s))["inputs"]["points"]

    aug = {"points": {"rotate": True, "jitter": 0.01}}
    assert torch.equal(first(aug), first(aug)) and not torch.equal(first(aug), first(None))
