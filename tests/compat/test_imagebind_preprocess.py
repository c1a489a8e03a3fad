"""ImageBind-parity preprocessing: exact text ids, bit-exact images, audio with ImageBind's clip quirk, video
clip sampling that decodes only the kept frames; and raw-file embeddings through the whole pipeline."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import anybind
from anybind.compat import loading as D
from anybind.compat import preprocess as P
from imagebind_fixture import load_pt

TOL = dict(rtol=1e-5, atol=1e-4)


def transform(model, modality):
    return anybind.get_modality(modality).make_transform(model.input_contract(modality))


@pytest.fixture(scope="module")
def expected(fixture_dir):
    return load_pt(fixture_dir, "expected_preprocessed.pt")


def test_contracts_select_the_imagebind_transforms(tiny_model):
    for m in tiny_model.modalities:
        assert tiny_model.input_contract(m)["compat"] == "imagebind"
    assert transform(tiny_model, "audio").__module__ == P.__name__


def test_text_ids_are_exact(tiny_model, captions, expected):
    fn = transform(tiny_model, "text")
    ids = torch.stack([fn(c) for c in captions])
    assert ids.dtype == torch.int64
    assert torch.equal(ids, expected["text"])
    assert ids[1, -1] == 49407  # the long caption is truncated with end-of-text kept last


def test_image_is_bit_exact_through_the_reader(tiny_model, fixture_dir, expected):
    image = anybind.get_modality("image").read(fixture_dir / "raw_image.png")
    x = transform(tiny_model, "image")(image)
    assert torch.equal(x.unsqueeze(0), expected["vision"])
    assert torch.equal(D.load_and_transform("image", [str(fixture_dir / "raw_image.png")]), expected["vision"])


def test_uint8_tensor_images_match_the_same_pixels_from_a_file(tiny_model, fixture_dir):
    from torchvision.transforms.functional import pil_to_tensor

    image = D.read_image_file(fixture_dir / "raw_image.png")
    fn = transform(tiny_model, "image")
    assert torch.equal(fn(pil_to_tensor(image)), fn(image))
    as_float = fn(pil_to_tensor(image).float() / 255)  # torch resize: close, not bit-exact
    assert (as_float - fn(image)).abs().mean() < 0.02
    with pytest.raises(anybind.InputError, match=r"\(3, H, W\)"):
        fn(torch.zeros(4, 8, 8, dtype=torch.uint8))


def test_audio_matches_through_the_reader(tiny_model, fixture_dir, expected):
    raw = anybind.get_modality("audio").read(fixture_dir / "raw_audio.wav")
    x = transform(tiny_model, "audio")(raw)
    assert x.shape == (3, 1, 128, 204) and x.dtype == torch.float32
    torch.testing.assert_close(x.unsqueeze(0), expected["audio"], rtol=0, atol=1e-3)
    torch.testing.assert_close(D.load_and_transform("audio", [str(fixture_dir / "raw_audio.wav")]), expected["audio"],
                               rtol=0, atol=1e-3)
    pad = x[:, :, :, 198:]  # a 2 s clip has 198 frames; zero padding is normalized too
    torch.testing.assert_close(pad, torch.full_like(pad, 4.268 / 9.138))


def test_the_inplace_mean_quirk_is_reproduced(fixture_dir, expected):
    """Overlapping clips see samples already shifted by earlier clips' means; independent clips do not."""
    raw = D.read_audio_file(fixture_dir / "raw_audio.wav")
    contract = {"inplace_mean": False}
    independent = P.audio_transform(contract)(raw)
    diff = (independent - expected["audio"][0]).abs().amax(dim=(1, 2))  # (clips, frames)
    assert diff[0].max() < 1e-3
    for clip, frames in ((1, [148, 149]), (2, [98, 99, 148, 149])):
        assert (diff[clip] > 1e-3).nonzero().flatten().tolist() == frames  # frames straddling earlier clip ends
        assert diff[clip].max() > 0.4
    raw_copy = (raw[0].clone(), raw[1])
    P.audio_transform({})(raw_copy)
    assert torch.equal(raw_copy[0], raw[0]), "the transform must not modify the caller's waveform"


def test_clip_windows_follow_imagebinds_sampler():
    assert P.clip_windows(3.0, 2.0, 3) == [(0, 2), (Fraction(1, 2), Fraction(5, 2)), (1, 3)]
    assert P.clip_windows(1.0, 2.0, 3) == [(0, 2)] * 3  # a short file: every clip starts at 0 (zero-padded)
    assert P.clip_windows(12.0, 2.0, 5)[-1] == (10, 12)


def test_other_sample_rates_are_resampled_first(tmp_path):
    import torchaudio

    t = torch.arange(24000) / 8000
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t)).unsqueeze(0)
    sf.write(tmp_path / "a.wav", wav[0].numpy(), 8000, subtype="PCM_16")
    decoded, sr = D.read_audio_file(tmp_path / "a.wav")
    assert sr == 8000
    fn = P.audio_transform({})
    direct = fn((decoded, sr))
    by_hand = fn((torchaudio.functional.resample(decoded, 8000, 16000), 16000))
    assert torch.equal(direct, by_hand)
    assert direct.shape == (3, 1, 128, 204)


def test_short_and_stereo_audio():
    fn = P.audio_transform({})
    short = fn(torch.randn(4000) * 0.1)  # 0.25 s: every clip is the whole file, zero-padded to 204 frames
    assert short.shape == (3, 1, 128, 204) and torch.isfinite(short).all()
    torch.testing.assert_close(short[0], short[2], rtol=0, atol=1e-4)
    # stereo: the mean over both channels is subtracted, then only channel 0 feeds the fbank
    g = torch.Generator().manual_seed(0)
    stereo = torch.randn(2, 32000, generator=g) * 0.1  # 2 s: every clip is the whole file
    base = fn((stereo, 16000))
    other_right = stereo.clone()
    other_right[1] = torch.randn(32000, generator=g) * 0.1
    other_right[1] -= other_right[1].mean() - stereo[1].mean()  # same mean, different samples
    torch.testing.assert_close(fn((other_right, 16000)), base, rtol=0, atol=1e-3)
    assert not torch.allclose(fn((stereo.flip(0), 16000)), base, atol=1e-2)  # channel 0 is what counts
    with pytest.raises(anybind.InputError, match="no samples"):
        fn(torch.zeros(1, 0))


def _per_clip_reference(wav: torch.Tensor, sr: int) -> torch.Tensor:
    """ImageBind's audio steps one clip at a time through torchaudio itself (resample, in-place clip mean, kaldi
    fbank, pad/cut to 204, normalize)."""
    import torchaudio

    wav = torchaudio.functional.resample(wav, sr, 16000)
    out = []
    for start, end in P.clip_windows(wav.shape[1] / 16000, 2.0, 3):
        clip = wav[:, int(start * 16000):int(end * 16000)]
        clip -= clip.mean()
        bank = torchaudio.compliance.kaldi.fbank(clip, htk_compat=True, sample_frequency=16000, use_energy=False,
                                                 window_type="hanning", num_mel_bins=128, dither=0.0,
                                                 frame_length=25, frame_shift=10).transpose(0, 1)
        bank = F.pad(bank, (0, 204 - bank.shape[1])) if bank.shape[1] < 204 else bank[:, :204]
        out.append(((bank - anybind.constants.AUDIO_MEAN) / anybind.constants.AUDIO_STD).unsqueeze(0))
    return torch.stack(out)


@pytest.mark.parametrize("seconds,sr", [(3.3, 22050), (2.9, 16000), (7.0, 8000), (1.2, 44100)])
def test_batched_clips_equal_torchaudio_one_clip_at_a_time(seconds, sr):
    g = torch.Generator().manual_seed(int(seconds * 10))
    wav = torch.randn(2, int(seconds * sr), generator=g) * 0.2 + 0.05  # stereo, a DC offset: the in-place means
    got = P.audio_transform({})((wav.clone(), sr))
    torch.testing.assert_close(got, _per_clip_reference(wav.clone(), sr), rtol=1e-5, atol=1e-4)


def test_clips_of_unequal_length_are_each_padded_to_the_target(monkeypatch):
    # windows of 2.00 s and 1.99 s: 198 and 197 fbank frames, each zero-padded to 204 on its own
    windows = [(Fraction(0), Fraction(2)), (Fraction(1, 2), Fraction(249, 100)), (Fraction(1), Fraction(3))]
    monkeypatch.setattr(P, "clip_windows", lambda duration, clip_duration, clips: windows)
    wav = torch.randn(1, 48000, generator=torch.Generator().manual_seed(5)) * 0.1
    got = P.audio_transform({})((wav.clone(), 16000))
    assert got.shape == (3, 1, 128, 204)
    torch.testing.assert_close(got, _per_clip_reference(wav.clone(), 16000), rtol=1e-5, atol=1e-4)


def test_threads_give_the_serial_result_and_restore_torch_threads(tmp_path, fixture_dir):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    images, sounds = [], []
    for i in range(5):
        px = (torch.rand(180 + 17 * i, 240, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(px).save(tmp_path / f"{i}.jpg", quality=90)
        images.append(str(tmp_path / f"{i}.jpg"))
        sf.write(tmp_path / f"{i}.wav", (torch.randn(8000 + 3000 * i, generator=g) * 0.1).numpy(), 8000)
        sounds.append(str(tmp_path / f"{i}.wav"))
    before = torch.get_num_threads()
    for modality, items in (("image", images), ("audio", sounds)):
        serial = D.load_and_transform(modality, items, workers=1)
        threaded = D.load_and_transform(modality, items, workers=3)
        assert torch.equal(serial, threaded), modality
        assert torch.get_num_threads() == before


def test_raw_file_embeddings_match_imagebind(tiny_model, fixture_dir, captions):
    expected = load_pt(fixture_dir, "expected_raw_embeddings.pt")
    z = tiny_model.embed({"text": captions, "vision": [fixture_dir / "raw_image.png"],
                          "audio": [str(fixture_dir / "raw_audio.wav")]})
    for key in ("text", "vision", "audio"):
        torch.testing.assert_close(z[key], F.normalize(expected[key], dim=-1), **TOL)
    pre = {"text": D.load_and_transform("text", captions),
           "vision": D.load_and_transform("image", [str(fixture_dir / "raw_image.png")]),
           "audio": D.load_and_transform("audio", [str(fixture_dir / "raw_audio.wav")])}
    with torch.no_grad():
        out = tiny_model.forward_imagebind(pre)
    for key in ("text", "vision", "audio"):
        torch.testing.assert_close(out[key], expected[key], **TOL)


# ----------------------------------------------------------------------------------------------- video
class CountingVideo:
    """A fake decoded video: frame i is filled with the value i // 2; counts what gets decoded."""

    def __init__(self, num_frames: int, fps: float, height: int = 36, width: int = 48):
        self.num_frames, self.fps, self.h, self.w = num_frames, fps, height, width
        self.calls: list[list[int]] = []

    def get_frames(self, indices):
        idx = [int(i) for i in indices]
        self.calls.append(idx)
        frames = torch.tensor([i // 2 for i in idx], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, self.h, self.w, 3)
        return frames.clone()


def test_video_clips_keep_first_and_last_frame_of_each_window():
    idx = P.clip_frame_indices(num_frames=300, fps=30.0, clips=5, clip_duration=2.0, frames=2)
    # 10 s video: windows start at 0, 2, 4, 6, 8 s; frames in [start, end) are start*30 ... start*30 + 59
    assert idx == [[0, 59], [60, 119], [120, 179], [180, 239], [240, 299]]
    short = P.clip_frame_indices(num_frames=30, fps=30.0, clips=5, clip_duration=2.0, frames=2)
    assert short == [[0, 29]] * 5


def test_video_transform_decodes_only_the_kept_frames():
    video = CountingVideo(num_frames=300, fps=30.0)
    contract = {"image_size": 32, "clips": 5, "frames": 2, "clip_duration": 2.0, "spatial_crops": 3}
    x = P.video_transform(contract)(video)
    assert x.shape == (15, 3, 2, 32, 32) and x.dtype == torch.float32
    assert video.calls == [[0, 59, 60, 119, 120, 179, 180, 239, 240, 299]]  # one batched decode of 10 frames
    mean = torch.tensor(P.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(P.CLIP_STD).view(3, 1, 1)
    frame_value = (x[:, :, :, 0, 0] * std.view(3, 1) + mean.view(3, 1)) * 255  # (15, 3, 2)
    assert torch.allclose(frame_value[0, 0], torch.tensor([0.0, 29.0]), atol=1e-3)
    assert torch.allclose(frame_value[14, 0], torch.tensor([120.0, 149.0]), atol=1e-3)


def test_video_spatial_crops_run_along_the_long_side():
    ramp = torch.arange(48, dtype=torch.float32).view(1, 1, 1, 48).expand(4, 3, 36, 48) / 47  # (T, 3, H, W)
    contract = {"image_size": 24, "clips": 1, "frames": 2, "clip_duration": 2.0, "spatial_crops": 3,
                "mean": [0, 0, 0], "std": [1, 1, 1]}
    crops = P.video_transform(contract)((ramp, 2.0))
    assert crops.shape == (3, 3, 2, 24, 24)
    left, centre, right = (c[0, 0, 12].mean() for c in crops)
    assert left < centre < right
    tall = P._spatial_crops(torch.zeros(3, 2, 40, 24), 24, 3)
    assert [tuple(c.shape[-2:]) for c in tall] == [(24, 24)] * 3


def test_video_from_a_file_uses_the_reader(tiny_model, tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            img = np.full((48, 64, 3), i * 6, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = anybind.get_modality("video").read(path)
    x = transform(tiny_model, "video")(source)
    assert x.shape == (15, 3, 2, 224, 224)
    if hasattr(source, "frames_decoded"):
        assert source.frames_decoded <= 10
    z = tiny_model.embed({"video": [path]})["video"]
    assert z.shape == (1, 32) and torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(1))
