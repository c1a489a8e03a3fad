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


def _normalised(rgb, contract):
    mean, std = torch.tensor(contract["mean"]).view(3, 1, 1), torch.tensor(contract["std"]).view(3, 1, 1)
    return (rgb - mean) / std, mean, std


def test_image_color_jitter_in_pixel_space():
    contract = {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}
    rgb = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2  # no pixel near 0 or 1
    x, mean, std = _normalised(rgb, contract)
    bright = make_augment("image", {"brightness": 0.4}, contract)
    ratios = set()
    for seed in range(5):  # brightness scales every pixel by one factor in [0.6, 1.4]
        out = bright(x, g(seed)) * std + mean
        r = out / rgb
        if float(r.amax()) * 0.8 <= 1.0:  # nothing clipped at 1
            assert torch.allclose(r, r.flatten()[0].expand_as(r), atol=1e-5)
            assert 0.6 - 1e-6 <= float(r.flatten()[0]) <= 1.4 + 1e-6
            ratios.add(round(float(r.flatten()[0]), 4))
    assert len(ratios) >= 2  # the factor is drawn per sample
    gray = torch.full((3, 4, 4), 0.5)
    xg, _, _ = _normalised(gray, contract)
    hue = make_augment("image", {"hue": 0.5, "saturation": 0.5}, contract)
    assert torch.allclose(hue(xg, g(1)) * std + mean, gray, atol=1e-5)  # grey has no hue and no saturation to change
    red = torch.zeros(3, 4, 4)
    red[0] = 0.9
    xr, _, _ = _normalised(red, contract)
    moved = hue(xr, g(2)) * std + mean
    assert not torch.allclose(moved, red, atol=1e-2) and torch.equal(hue(xr, g(2)), hue(xr, g(2)))  # seeded
    with pytest.raises(ValueError, match="augment.hue"):
        make_augment("image", {"hue": 0.7}, contract)


def test_video_color_jitter_shares_one_draw_across_frames():
    contract = {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}
    rgb = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    x, _, _ = _normalised(rgb, contract)
    video = x.unsqueeze(1).repeat(1, 4, 1, 1).unsqueeze(0)  # (clips=1, 3, frames=4, H, W)
    params = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1}
    out = make_augment("video", params, contract)(video, g(7))
    img = make_augment("image", params, contract)(x, g(7))
    assert out.shape == video.shape
    for t in range(4):  # every frame gets the image's draw, channels read from dim -4
        assert torch.allclose(out[0, :, t], img, atol=1e-5)


def _tone_recording(t, seconds=1.0, start=0.25, stop=0.75, freq=0.3):
    n = int(t.sample_rate * seconds)
    wave = torch.zeros(n)
    a, b = int(start * n), int(stop * n)
    wave[a:b] = 0.1 * torch.sin(torch.arange(b - a) * freq)
    return wave


def test_audio_noise_mixing_sets_the_snr_and_keeps_padding(tmp_path):
    from anybind.data.transforms.audio import LogMelTransform

    t = LogMelTransform(sample_rate=8000, num_mel_bins=32, target_length=110, clip_duration=1.0, clips=1)
    x = t(_tone_recording(t))
    contract = {"mean": t.mean, "std": t.std}
    floor = (math.log(torch.finfo(torch.float32).eps) - t.mean) / t.std
    signal = x > floor + 1e-4
    signal[..., 98:] = False
    power = lambda v: torch.exp(v * t.std + t.mean)  # noqa: E731
    for snr in (0.0, 10.0, 20.0):
        aug = make_augment("audio", {"noise_snr": [snr, snr]}, contract)
        y = aug(x, g(3))
        assert torch.equal(y[..., 98:], x[..., 98:])  # frames padded to the clip's length stay padding
        added = power(y) - power(x)  # power-domain mixing: what was added is the scaled noise
        assert (added[..., :98] > 0).all()
        ratio = power(x)[signal].mean() / added[signal].mean()
        assert abs(10 * math.log10(float(ratio)) - snr) < 0.05
    aug = make_augment("audio", {"noise_snr": [5, 30]}, contract)
    assert torch.equal(aug(x, g(4)), aug(x, g(4))) and not torch.equal(aug(x, g(4)), aug(x, g(5)))
    assert torch.equal(make_augment("audio", {"noise_snr": [5, 5], "noise_prob": 0.0}, contract)(x, g(4)), x)
    with pytest.raises(ValueError, match="noise_snr"):
        make_augment("audio", {"noise_snr": [30, 5]}, contract)


def test_audio_noise_files_bring_their_spectrum(tmp_path):
    import soundfile as sf

    from anybind.data.transforms.audio import LogMelTransform

    contract = {"sample_rate": 8000, "num_mel_bins": 32, "target_length": 100, "clip_duration": 1.0, "clips": 1}
    t = LogMelTransform(**contract)
    contract.update(mean=t.mean, std=t.std)
    folder = tmp_path / "noise"
    folder.mkdir()
    hum = 0.05 * torch.sin(torch.arange(16000) * 2 * math.pi * 3000 / 8000)  # a 3 kHz hum, far above the tone
    sf.write(folder / "hum.wav", hum.numpy(), 8000)
    (folder / "hum.txt").write_text("attribution")  # not audio: skipped
    x = t(_tone_recording(t, freq=2 * math.pi * 300 / 8000))  # 300 Hz tone
    power = lambda v: torch.exp(v * t.std + t.mean)  # noqa: E731
    y = make_augment("audio", {"noise_snr": [0, 0], "noise_files": str(folder)}, contract)(x, g(0))
    added = (power(y) - power(x)).reshape(32, -1)  # (mel, frames)
    per_band = added.mean(dim=-1)
    assert int(per_band.argmax()) >= 24 and float(per_band[:8].max()) < 1e-3 * float(per_band.max())  # the hum's bands
    glob_aug = make_augment("audio", {"noise_snr": [0, 0], "noise_files": [str(folder / "*.wav")]}, contract)
    assert torch.allclose(glob_aug(x, g(0)), y)
    with pytest.raises(anybind.InputError, match="noise_files"):
        make_augment("audio", {"noise_snr": [0, 10], "noise_files": str(tmp_path / "missing")}, contract)
    (tmp_path / "empty").mkdir()
    with pytest.raises(anybind.InputError, match="matched no audio files"):
        make_augment("audio", {"noise_snr": [0, 10], "noise_files": str(tmp_path / "empty")}, contract)


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
