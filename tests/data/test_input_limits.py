"""Hostile inputs: every reader and transform reads only what the contract keeps and refuses past a documented
limit with an InputError naming the file, the modality and the limit (docs/input-limits.md)."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
from assets import contract, random_cloud, tone, write_ply, write_video

from anybind.data import limits as L
from anybind.data import transforms as T
from anybind.data.readers import open_audio, read_audio, read_image, read_points, read_tensor_file, read_text, \
    read_video
from anybind.errors import InputError


@pytest.fixture(autouse=True)
def _restore_limits(monkeypatch):
    """Each test may lower limits; they come back afterwards (process values and the environment)."""
    import os

    saved = dict(vars(L.LIMITS))
    env = {L.InputLimits.env_name(n): os.environ.get(L.InputLimits.env_name(n)) for n in saved}
    for key in env:
        os.environ.pop(key, None)
    yield
    for name, value in saved.items():
        setattr(L.LIMITS, name, value)
    for key, value in env.items():  # set_limits exports its values for child processes: those go too
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def expect_limit(fn, path, modality: str, limit: str, problem: str = ""):
    with pytest.raises(InputError) as info:
        fn(path)
    err = info.value
    assert err.source == str(path) and err.modality == modality, str(err)
    assert limit in err.problem and L.InputLimits.env_name(limit) in err.problem, str(err)
    assert problem in err.problem, str(err)
    return err


# ----------------------------------------------------------------------------------------------------- limits


def test_set_limits_changes_the_process_and_the_environment(monkeypatch):
    L.set_limits(max_points=1234)
    assert L.LIMITS.max_points == 1234 and L.os.environ["ANYBIND_MAX_POINTS"] == "1234"
    with pytest.raises(ValueError, match="did you mean max_points"):
        L.set_limits(max_pionts=5)
    with pytest.raises(ValueError, match="positive"):
        L.set_limits(max_points=0)
    monkeypatch.setenv("ANYBIND_MAX_IMAGE_PIXELS", "1e6")
    assert L._from_env().max_image_pixels == 1_000_000
    monkeypatch.setenv("ANYBIND_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="ANYBIND_MAX_IMAGE_PIXELS"):
        L._from_env()


# ------------------------------------------------------------------------------------------------------- text


def test_a_100_mb_text_is_cut_before_tokenizing():
    fn = T.text_transform(contract("text"))
    fn("warm up")  # the tokenizer's first use loads its vocabulary
    huge = "a dog barking in the rain " * (100 * 2**20 // 26)
    t0 = time.perf_counter()
    ids = fn(huge)
    assert time.perf_counter() - t0 < 2.0
    assert torch.equal(ids, fn(huge[:2000]))  # 77 tokens come from the start either way
    assert T.cut_text("ab cd ef", 4) == "ab" and T.cut_text("ab cd ef", 5) == "ab cd" and T.cut_text("abcdef", 3) == "abc"
    assert T.cut_text("short", 100) == "short"


def test_a_huge_text_file_is_read_only_up_to_the_limit(tmp_path):
    p = tmp_path / "big.txt"
    p.write_bytes("é".encode() * 3_000_000)  # 6 MB of two-byte characters
    L.set_limits(max_text_bytes=1001)  # the limit cuts the 501st character in half: it is dropped
    assert read_text(p) == "é" * 500


# ------------------------------------------------------------------------------------------------------ image


def _png_bomb(path, width: int, height: int):
    """A valid PNG header declaring ``width x height`` RGB pixels, with a few compressed bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_png_is_refused_from_its_header(tmp_path):
    p = _png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    t0 = time.perf_counter()
    expect_limit(read_image, p, "image", "max_image_pixels", "10000000000 pixels")
    p = _png_bomb(tmp_path / "smaller.png", 10_000, 10_000)  # under PIL's own bound, over anybind's
    expect_limit(read_image, p, "image", "max_image_pixels", "10000x10000")
    assert time.perf_counter() - t0 < 1.0


# ------------------------------------------------------------------------------------------------------ audio


def _long_silent_wav(path, seconds: int, rate: int = 16000):
    """A PCM-16 mono WAV of ``seconds`` seconds, made as a sparse file (the samples are never written)."""
    size = seconds * rate * 2
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2,
                                                                                2, 16) + b"data" + struct.pack("<I", size)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + size)
    return path


def test_a_three_hour_wav_reads_only_its_clips(tmp_path):
    p = _long_silent_wav(tmp_path / "long.wav", 3 * 3600)
    src = open_audio(p)
    assert src.seekable and src.num_samples == 3 * 3600 * 16000
    t0 = time.perf_counter()
    mel = T.audio_transform(contract("audio"))(src)
    assert time.perf_counter() - t0 < 2.0 and mel.shape == (3, 1, 128, 204)
    assert 0 < src.samples_read < 3 * 3 * 16000  # three 2 s windows and their resampling margin, not 3 hours
    expect_limit(read_audio, p, "audio", "max_audio_decode_samples", "decode whole")


@pytest.mark.parametrize("rate,channels,subtype", [(44100, 2, "PCM_16"), (16000, 1, "FLOAT"), (22050, 3, "PCM_24")])
def test_lazy_audio_equals_the_whole_decode_bit_for_bit(tmp_path, rate, channels, subtype):
    p = tmp_path / "a.wav"
    sf.write(p, tone(5.3, rate, channels) * np.linspace(0.2, 1, channels), rate, subtype=subtype)
    for c in (contract("audio"), contract("audio", clips=None), contract("audio", clips=4, clip_duration=0.7)):
        fn = T.audio_transform(c)
        assert torch.equal(fn(open_audio(p)), fn(read_audio(p)))


def test_audio_sources_unpack_like_read_audio(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, tone(0.4, 16000, 2), 16000)
    wave, sr = open_audio(p)
    expected, rate = read_audio(p)
    assert sr == rate == 16000 and torch.equal(wave, expected) and wave.shape == (2, 6400)


# ------------------------------------------------------------------------------------------------------ video


def _one_keyframe_video(path, frames: int):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.gop_size = 100000  # a single keyframe: every later frame depends on it
        stream.options = {"sc_threshold": "1000000000"}  # no keyframe on a scene change either
        for t in range(frames):
            arr = np.full((32, 32, 3), 20 + (t // 4) % 200, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_video_with_sparse_keyframes_is_refused_past_the_decode_limit(tmp_path):
    p = _one_keyframe_video(tmp_path / "sparse.mp4", 300)
    src = read_video(p)
    assert list(src.keyframes()) == [0]
    assert src.decode_cost([0, 1, 2]) == 3 and src.decode_cost([299]) == 300 and src.decode_cost([100, 299]) == 300
    fn = T.video_transform(contract("video", image_size=16))
    assert fn(read_video(p)).shape == (5, 3, 2, 16, 16)  # 300 frames: within the default limit
    L.set_limits(max_video_decode_frames=100)
    expect_limit(lambda q: fn(read_video(q)), p, "video", "max_video_decode_frames", "about 300 frames")


def test_frequent_keyframes_keep_the_decode_cost_low(tmp_path):
    p = write_video(tmp_path / "v.mp4", frames=120, fps=12)  # mpeg4's default: a keyframe every 12 frames
    src = read_video(p)
    assert len(src.keyframes()) >= 10 and src.decode_cost([119]) <= 12


def test_huge_video_frames_are_refused_before_decoding(tmp_path):
    p = write_video(tmp_path / "v.mp4", frames=4, size=(48, 32))
    L.set_limits(max_video_frame_pixels=1000)
    expect_limit(read_video, p, "video", "max_video_frame_pixels", "48x32")


# ----------------------------------------------------------------------------------------------------- points


def test_a_ply_declaring_a_trillion_vertices_is_refused(tmp_path):
    p = tmp_path / "liar.ply"
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\n"
                  b"property float y\nproperty float z\nend_header\n" + b"\0" * 120)
    expect_limit(read_points, p, "points", "max_points", "1000000000000")


def test_point_files_past_the_size_and_count_limits(tmp_path):
    cloud = random_cloud(100)
    npy = tmp_path / "c.npy"
    np.save(npy, cloud)
    L.set_limits(max_points=50)
    expect_limit(read_points, npy, "points", "max_points", "100 points")
    L.set_limits(max_points=10**6, max_points_file_bytes=1000)
    expect_limit(read_points, npy, "points", "max_points_file_bytes")
    xyz = tmp_path / "c.xyz"
    np.savetxt(xyz, cloud)
    L.set_limits(max_points_file_bytes=10**9, max_points_text_bytes=1000)
    expect_limit(read_points, xyz, "points", "max_points_text_bytes")
    ply = write_ply(tmp_path / "c.ply", cloud.astype(np.float32))
    assert read_points(ply).shape == (100, 3)  # binary PLY: the text limit does not apply


def test_a_small_npz_that_inflates_past_the_limit_is_refused_unread(tmp_path):
    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, points=np.zeros((200_000, 3)))  # 4.8 MB of zeros in a few kB
    L.set_limits(max_points_file_bytes=1_000_000, max_tensor_file_bytes=1_000_000)
    assert p.stat().st_size < 1_000_000
    expect_limit(read_points, p, "points", "max_points_file_bytes", "inflates")
    expect_limit(lambda q: read_tensor_file(q, "depth"), p, "depth", "max_tensor_file_bytes", "inflates")


def test_tensor_files_past_the_size_limit(tmp_path):
    p = tmp_path / "d.pt"
    torch.save(torch.zeros(1, 64, 64), p)
    L.set_limits(max_tensor_file_bytes=1000)
    expect_limit(lambda q: read_tensor_file(q, "depth"), p, "depth", "max_tensor_file_bytes")
