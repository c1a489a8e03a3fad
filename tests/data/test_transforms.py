"""Transforms turn raw data into the tensors the input contracts promise."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from assets import IMAGEBIND_FIXTURE, SHARED_DATA, contract, gradient_rgb, random_cloud, tone, write_audio, write_image, \
    write_video

import anybind
from anybind.data import transforms as T
from anybind.data.readers import VideoSource, read_audio, read_image, read_video

TEST_IMAGE = {"image_size": 32, "mean": list(T.CLIP_MEAN), "std": list(T.CLIP_STD), "interpolation": "bicubic"}
TEST_AUDIO = {"sample_rate": 16000, "num_mel_bins": 32, "target_length": 48, "clip_duration": 0.5, "clips": 1,
              "mean": -4.268, "std": 9.138}
TEST_VIDEO = {"image_size": 32, "mean": list(T.CLIP_MEAN), "std": list(T.CLIP_STD), "frames": 2, "clips": 2,
              "clip_duration": 2.0}
TEST_POINTS = {"num_points": 64, "channels": 3, "min_points": 16}


def fixture_file(name: str):
    p = IMAGEBIND_FIXTURE / name
    if not p.exists():
        pytest.skip(f"ImageBind fixture missing: {p}")
    return p


# ----------------------------------------------------------------------------------------------------- image


def test_image_shape_and_normalization():
    from PIL import Image

    fn = T.image_transform(TEST_IMAGE)
    x = fn(Image.new("RGB", (50, 40), (255, 255, 255)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = (1 - torch.tensor(T.CLIP_MEAN)) / torch.tensor(T.CLIP_STD)
    torch.testing.assert_close(x.mean((1, 2)), expected)


def test_image_resizes_the_short_side_and_crops_the_centre():
    fn = T.image_transform({**TEST_IMAGE, "mean": [0, 0, 0], "std": [1, 1, 1]})
    img = torch.zeros(3, 40, 120, dtype=torch.uint8)
    img[:, :, 40:80] = 255  # the middle third is white: exactly what a centre square crop keeps
    x = fn(img)
    assert x.shape == (3, 32, 32)
    assert x[:, :, 2:-2].min() > 0.95


def test_pil_uint8_and_float_inputs_agree():
    from PIL import Image

    fn = T.image_transform(TEST_IMAGE)
    arr = gradient_rgb(48, 64)
    u8 = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    a, b, c = fn(Image.fromarray(arr)), fn(u8), fn(u8.float() / 255)
    assert (a - b).abs().mean() < 0.02 and (b - c).abs().mean() < 0.02
    torch.testing.assert_close(fn(u8[:1]), fn(u8[:1].expand(3, -1, -1)))  # one channel = grey


def test_image_matches_imagebind_preprocessing_bit_for_bit():
    fn = T.image_transform({"image_size": 224, "mean": T.CLIP_MEAN, "std": T.CLIP_STD, "interpolation": "bicubic"})
    expected = torch.load(fixture_file("expected_preprocessed.pt"), weights_only=True)["vision"][0]
    torch.testing.assert_close(fn(read_image(fixture_file("raw_image.png"))), expected, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------------ text


def test_text_tokens_start_end_and_pad():
    ids = T.text_transform({"context_length": 77, "tokenizer": "clip_bpe"})("a dog barking")
    assert ids.shape == (77,) and ids.dtype == torch.int64
    n = int((ids != 0).sum())
    assert ids[0] == 49406 and ids[n - 1] == 49407 and (ids[n:] == 0).all() and n == 5
    assert int(ids.argmax()) == n - 1  # text heads pool at the EOT token


def test_long_text_keeps_eot_last_and_short_context():
    ids = T.text_transform(contract("text", context_length=77))("word " * 200)
    assert (ids != 0).all() and ids[-1] == 49407 and int(ids.argmax()) == 76
    short = T.text_transform(contract("text", context_length=16))("a dog barking")
    assert short.shape == (16,) and short[4] == 49407


def test_pretokenized_ids_pass_through():
    ids = torch.arange(77)
    assert torch.equal(T.text_transform(contract("text"))(ids), ids)


def test_tokenizer_is_cached_per_process():
    assert T.get_tokenizer("clip_bpe") is T.get_tokenizer("clip_bpe")


def test_text_matches_imagebind_ids():
    captions = fixture_file("raw_text.txt").read_text(encoding="utf-8").split("\n")
    expected = torch.load(fixture_file("expected_preprocessed.pt"), weights_only=True)["text"]
    fn = T.text_transform({"context_length": 77, "tokenizer": "clip_bpe"})
    assert torch.equal(torch.stack([fn(c) for c in captions]), expected)


# ----------------------------------------------------------------------------------------------------- audio


def test_clip_windows_are_evenly_spaced():
    assert T.clip_windows(48000, 16000, 2.0, 3) == [(0, 32000), (8000, 40000), (16000, 48000)]
    assert T.clip_windows(16000, 16000, 2.0, 3) == [(0, 32000)] * 3  # short: all at the start
    assert T.clip_windows(160000, 16000, 2.0, 1) == [(0, 32000)]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000, 12345])
def test_windowed_resampling_equals_resampling_everything(rate):
    import torchaudio.functional as AF

    wave = torch.randn(rate * 3 + 17, generator=torch.Generator().manual_seed(rate))
    full = AF.resample(wave, rate, 16000)
    starts = torch.tensor([0, 7, len(full) // 2, len(full) - 300, len(full) - 1])
    got = T.resampled_windows(wave, rate, 16000, starts, 1000)
    ref = torch.stack([torch.nn.functional.pad(full[s:s + 1000], (0, 1000 - len(full[s:s + 1000])))
                       for s in starts.tolist()])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_audio_shapes_follow_the_contract():
    wave = torch.from_numpy(tone(3.0, 16000).T)
    x = T.audio_transform(contract("audio"))((wave, 16000))
    assert x.shape == (3, 1, 128, 204) and x.dtype == torch.float32
    y = T.audio_transform(TEST_AUDIO)((wave, 16000))
    assert y.shape == (1, 1, 32, 48)
    z = T.audio_transform({**TEST_AUDIO, "clips": None})((wave, 16000))
    assert z.shape == (1, 32, 48)
    torch.testing.assert_close(y[0], z)


def test_audio_frames_beyond_the_clip_are_padded_with_zero_log_mel():
    x = T.audio_transform(contract("audio"))((torch.from_numpy(tone(3.0, 16000).T), 16000))
    pad_value = (0 - -4.268) / 9.138  # 2 s give 198 fbank frames; the remaining 6 hold log-mel 0
    torch.testing.assert_close(x[..., 198:], torch.full_like(x[..., 198:], pad_value))
    assert (x[..., :198] != pad_value).all()


def test_short_audio_is_zero_padded_as_silence():
    x = T.audio_transform(TEST_AUDIO)((torch.from_numpy(tone(0.2, 16000).T), 16000))
    loud, silent = x[0, 0, :, :15], x[0, 0, :, 25:]
    assert silent.max() < -1.0 < loud.max()  # log of a tiny floor energy, normalized
    torch.testing.assert_close(silent, silent[:, :1].expand_as(silent))


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_any_rate_gives_the_same_features_as_16k(rate):
    fn = T.audio_transform(TEST_AUDIO)
    ref = fn((torch.from_numpy(tone(1.0, 16000, freq=600).T), 16000))
    got = fn((torch.from_numpy(tone(1.0, rate, freq=600).T), rate))
    loud = ref > 0  # bins that carry the tone; near-silent bins only hold resampling ripple
    assert loud.sum() > 100
    assert (got - ref)[loud].abs().mean() < 0.02


def test_channels_are_averaged_and_bare_tensors_are_at_the_contract_rate():
    fn = T.audio_transform(TEST_AUDIO)
    stereo = torch.from_numpy(tone(1.0, 16000, channels=2).T)
    torch.testing.assert_close(fn((stereo, 16000)), fn(stereo.mean(0)))
    pcm = (stereo[0] * 32767).round().to(torch.int16)
    torch.testing.assert_close(fn(pcm), fn(pcm.float() / 32768))


def test_higher_pitch_lights_higher_mel_bins():
    fn = T.audio_transform(TEST_AUDIO)
    low = fn(torch.from_numpy(tone(1.0, 16000, freq=300)[:, 0]))[0, 0].mean(1).argmax()
    high = fn(torch.from_numpy(tone(1.0, 16000, freq=3000)[:, 0]))[0, 0].mean(1).argmax()
    assert high > low + 5


def test_audio_matches_imagebind_on_the_first_clip():
    """ImageBind shifts later overlapping clips in place (its own quirk, reproduced in anybind.compat); the first
    clip is untouched by it and must match."""
    expected = torch.load(fixture_file("expected_preprocessed.pt"), weights_only=True)["audio"][0]
    got = T.audio_transform(contract("audio"))(read_audio(fixture_file("raw_audio.wav")))
    torch.testing.assert_close(got[0], expected[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(got[1:, ..., :95], expected[1:, ..., :95], atol=1e-3, rtol=0)


def test_fsdd_and_ogg_clips_from_shared_data():
    files = [SHARED_DATA / "fsdd" / "recordings" / "0_george_0.wav", *sorted((SHARED_DATA / "audio_clips").glob(
        "*.ogg"))[:3]]
    files = [f for f in files if f.exists()]
    if not files:
        pytest.skip("shared audio data missing")
    fn = T.audio_transform(contract("audio"))
    for f in files:
        x = fn(read_audio(f))
        assert x.shape == (3, 1, 128, 204) and torch.isfinite(x).all(), f
        assert x.std() > 0.3, f  # real content, not padding


# ----------------------------------------------------------------------------------------------------- video


def test_frame_indices_spread_clips_and_frames():
    idx = T.frame_indices(num_frames=100, clip_frames=20, clips=3, frames=2)
    assert idx.tolist() == [[0, 19], [40, 59], [80, 99]]
    assert T.frame_indices(5, 48, 2, 2).tolist() == [[0, 4], [0, 4]]  # a short video: every clip is all of it


def _level_frames(n: int) -> torch.Tensor:
    """(n, 3, 8, 8) uint8; frame t is flat at level 2 * t, so the output tells which frames were kept."""
    return (torch.arange(n, dtype=torch.uint8) * 2).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()


def test_video_from_in_memory_frames():
    fn = T.video_transform({**TEST_VIDEO, "mean": [0, 0, 0], "std": [1, 1, 1]})
    out = fn(_level_frames(10))
    assert out.shape == (2, 3, 2, 32, 32) and out.dtype == torch.float32
    kept = (out.mean((1, 3, 4)) * 255 / 2).round().long()  # (clips, frames) frame indices
    assert kept.tolist() == [[0, 4], [5, 9]]
    with_fps = fn((_level_frames(60), 10.0))  # 2 s clips at 10 fps = 20 frames
    assert (with_fps.mean((1, 3, 4)) * 255 / 2).round().long().tolist() == [[0, 19], [40, 59]]
    torch.testing.assert_close(fn(_level_frames(10).float() / 255), out)


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mkv"])
def test_video_file_decodes_only_the_kept_frames(tmp_path, ext):
    src = read_video(write_video(tmp_path / f"a.{ext}", frames=48, fps=12, size=(64, 48)))
    fn = T.video_transform({**TEST_VIDEO, "mean": [0, 0, 0], "std": [1, 1, 1]})
    out = fn(src)
    assert out.shape == (2, 3, 2, 32, 32)
    assert src.frames_decoded == 4 and src.batches_decoded == 1
    levels = out.mean((1, 3, 4)) * 255  # frame t was written at grey level 20 + 20 t (mod 240)
    expected = (20 + 20 * fn.indices(48, 12.0)) % 240
    assert (levels - expected).abs().max() < 8


def test_big_buck_bunny_decodes_ten_frames_in_one_batch():
    p = SHARED_DATA / "video" / "big_buck_bunny_0_30.webm"
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    src = read_video(p)
    calls = []
    original = VideoSource.get_frames

    def spy(self, indices):
        calls.append(torch.as_tensor(indices).tolist())
        return original(self, indices)

    src.get_frames = spy.__get__(src)
    out = T.video_transform(contract("video", image_size=64, frames=2, clips=5, clip_duration=2.0))(src)
    assert out.shape == (5, 3, 2, 64, 64) and torch.isfinite(out).all()
    assert calls == [[0, 47, 168, 215, 336, 383, 504, 551, 672, 719]]  # 2 s clips at 24 fps, spread over 30 s
    assert src.frames_decoded == 10 and src.batches_decoded == 1


def test_video_without_clip_dimension():
    out = T.video_transform({**TEST_VIDEO, "clips": None})(_level_frames(6))
    assert out.shape == (3, 2, 32, 32)


# ---------------------------------------------------------------------------------------------------- points


def test_points_unit_sphere_and_farthest_point_sampling():
    cloud = torch.from_numpy(random_cloud(500))
    out = T.points_transform(TEST_POINTS)(cloud)
    assert out.shape == (64, 3) and out.dtype == torch.float32
    r = out.norm(dim=1)
    assert r.max() <= 1 + 1e-5 and r.max() > 0.99
    assert len(torch.unique(out, dim=0)) == 64  # distinct picks
    spread = torch.cdist(out, out).add(torch.eye(64) * 9).amin(1).mean()
    random_pick = T.points_transform({**TEST_POINTS, "num_points": 500})(cloud)[torch.randperm(500)[:64]]
    random_spread = torch.cdist(random_pick, random_pick).add(torch.eye(64) * 9).amin(1).mean()
    assert spread > random_spread  # FPS spreads points out more than random picks


def test_points_colour_channels():
    six = T.points_transform({**TEST_POINTS, "channels": 6})
    coloured = torch.from_numpy(random_cloud(200, rgb=True))
    out = six(coloured)
    assert out.shape == (64, 6)
    xyz_only = T.points_transform(TEST_POINTS)(coloured)
    torch.testing.assert_close(out[:, :3], xyz_only)
    from anybind.layers.pointops import normalize_unit_sphere

    d = (out[:, None, :3] - normalize_unit_sphere(coloured[:, :3])[None]).norm(dim=-1)
    assert d.amin(1).max() < 1e-5  # every output point is an input point, carrying that point's colour
    torch.testing.assert_close(out[:, 3:], coloured[d.argmin(1), 3:])
    grey = six(coloured[:, :3])
    assert (grey[:, 3:] == 0.5).all()


def test_small_clouds_repeat_points_and_large_ones_are_thinned_deterministically():
    small = T.points_transform(TEST_POINTS)(torch.from_numpy(random_cloud(20)))
    assert small.shape == (64, 3) and len(torch.unique(small, dim=0)) == 20
    big = torch.from_numpy(random_cloud(64 * T.PointCloudTransform.FPS_INPUT_FACTOR + 500))
    a, b = T.points_transform(TEST_POINTS)(big), T.points_transform(TEST_POINTS)(big)
    assert a.shape == (64, 3) and torch.equal(a, b)



def test_a_cloud_of_exactly_num_points_keeps_every_point_in_file_order():
    from anybind.layers.pointops import normalize_unit_sphere

    cloud = torch.from_numpy(random_cloud(64, rgb=True))
    out = T.points_transform({**TEST_POINTS, "channels": 6})(cloud)
    torch.testing.assert_close(out[:, :3], normalize_unit_sphere(cloud[:, :3]))
    torch.testing.assert_close(out[:, 3:], cloud[:, 3:].clamp(0, 1))
    one_more = T.points_transform(TEST_POINTS)(torch.from_numpy(random_cloud(65)))
    assert one_more.shape == (64, 3)  # 65 points: sampled as usual

# ------------------------------------------------------------------------------------------- identity, pickle


def test_identity_transform_checks_the_declared_shape():
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    out = T.identity_transform({"shape": [1, 8, 8]})(x)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())
    assert torch.equal(T.identity_transform({})(x.numpy()), x.float())


@pytest.mark.parametrize("factory,contract,raw", [
    (T.image_transform, TEST_IMAGE, torch.rand(3, 40, 50)),
    (T.text_transform, {"context_length": 77, "tokenizer": "clip_bpe"}, "a red cube"),
    (T.audio_transform, TEST_AUDIO, (torch.from_numpy(tone(0.7, 22050).T), 22050)),
    (T.video_transform, TEST_VIDEO, torch.rand(7, 3, 20, 24)),
    (T.points_transform, TEST_POINTS, torch.from_numpy(random_cloud(100))),
    (T.identity_transform, {}, torch.randn(2, 3)),
])
def test_transforms_pickle_for_dataloader_workers(factory, contract, raw):
    fn = factory(contract)
    clone = pickle.loads(pickle.dumps(fn))
    assert type(clone) is type(fn)
    assert torch.equal(clone(raw), fn(raw))


# ------------------------------------------------------------------------------------------- end to end


def test_modality_load_then_transform_for_every_file_type(tmp_path):
    """The path model.embed and the DataLoaders take: get_modality(m).load(item) -> make_transform(contract)."""
    np.save(tmp_path / "cloud.npy", random_cloud(100))
    (tmp_path / "caption.txt").write_text("a red cube\n")
    cases = {
        "image": (write_image(tmp_path / "a.png", "P"), TEST_IMAGE, (3, 32, 32)),
        "text": (tmp_path / "caption.txt", {"context_length": 77, "tokenizer": "clip_bpe"}, (77,)),
        "audio": (write_audio(tmp_path / "a.flac", seconds=0.3, sample_rate=44100, channels=2), TEST_AUDIO,
                  (1, 1, 32, 48)),
        "video": (write_video(tmp_path / "a.webm", frames=30, fps=10, size=(64, 48)), TEST_VIDEO,
                  (2, 3, 2, 32, 32)),
        "points": (tmp_path / "cloud.npy", TEST_POINTS, (64, 3)),
    }
    for name, (path, contract, shape) in cases.items():
        modality = anybind.get_modality(name)
        raw, source = modality.load(str(path))
        assert source == str(path)
        x = modality.make_transform(contract)(raw)
        assert tuple(x.shape) == shape and torch.isfinite(x.float()).all(), name
    text_raw, _ = anybind.get_modality("text").load("a red cube")  # a plain string is the text itself
    assert text_raw == "a red cube"


def test_item_dataset_in_worker_processes(tmp_path):
    from torch.utils.data import DataLoader

    from anybind.model import ItemDataset

    paths = [str(write_audio(tmp_path / f"{i}.wav", seconds=0.3 + 0.1 * i, sample_rate=8000)) for i in range(4)]
    ds = ItemDataset("audio", paths, TEST_AUDIO)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=ds.collate))
    idx = torch.cat([b[0] for b in batches])
    x = torch.cat([b[1] for b in batches])
    assert idx.tolist() == [0, 1, 2, 3] and x.shape == (4, 1, 1, 32, 48)
    torch.testing.assert_close(x[2], T.audio_transform(TEST_AUDIO)(read_audio(paths[2])))


def test_model_embed_reads_files_of_every_modality(tmp_path):
    encoders = {m: f"{enc}_test" for m, enc in [("image", "image_vit"), ("audio", "audio_vit"),
                                                 ("video", "video_vit"), ("points", "points_transformer")]}
    try:
        model = anybind.create_model(encoders)
    except Exception as exc:  # noqa: BLE001 - the encoders are another part of the project
        pytest.skip(f"test encoders unavailable: {exc}")
    np.save(tmp_path / "cloud.npy", random_cloud(100))
    inputs = {
        "image": [str(write_image(tmp_path / "a.jpg", "RGB")), torch.rand(3, 40, 40)],
        "audio": [str(write_audio(tmp_path / "a.ogg", seconds=0.6, sample_rate=22050))],
        "video": [str(write_video(tmp_path / "a.mp4", frames=30, fps=10, size=(64, 48)))],
        "points": [str(tmp_path / "cloud.npy")],
    }
    out = model.embed(inputs)
    for m, items in inputs.items():
        assert out[m].shape == (len(items), model.embed_dim)
        torch.testing.assert_close(out[m].norm(dim=1), torch.ones(len(items)))
