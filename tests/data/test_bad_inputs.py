"""Bad input of every modality raises InputError naming the file (or in-memory input), the modality and the problem."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from assets import (contract, random_cloud, truncate, write_audio, write_audio_only_container, write_image, write_ply,
                    write_video)

import anybind
from anybind.data import transforms as T
from anybind.data.readers import read_audio, read_image, read_points, read_tensor_file, read_text, read_video
from anybind.errors import InputError

READERS = {"image": read_image, "text": read_text, "audio": read_audio, "video": read_video, "points": read_points}
EXTENSIONS = {"image": ".png", "text": ".txt", "audio": ".wav", "video": ".mp4", "points": ".ply"}


def expect_error(fn, path, modality: str, problem: str):
    """``fn(path)`` raises InputError whose message names ``path`` and ``modality`` and matches ``problem``."""
    with pytest.raises(InputError) as info:
        fn(path)
    err = info.value
    msg = str(err)
    assert str(path) in msg and err.source == str(path), msg
    assert msg.startswith(f"{modality} input") and err.modality == modality, msg
    assert re.search(problem, err.problem, re.IGNORECASE), msg
    return err


def expect_memory_error(fn, raw, modality: str, problem: str):
    with pytest.raises(InputError) as info:
        fn(raw)
    err = info.value
    assert err.modality == modality and err.source == "<in-memory>", str(err)
    assert modality in str(err) and re.search(problem, err.problem, re.IGNORECASE), str(err)


# ------------------------------------------------------------------------------------------- every modality


@pytest.mark.parametrize("modality", list(READERS))
def test_empty_file(tmp_path, modality):
    p = tmp_path / f"empty{EXTENSIONS[modality]}"
    p.write_bytes(b"")
    expect_error(READERS[modality], p, modality, "empty")
    expect_error(anybind.get_modality(modality).read, p, modality, "empty")  # the registry path too


@pytest.mark.parametrize("modality", list(READERS))
def test_missing_file(tmp_path, modality):
    expect_error(READERS[modality], tmp_path / f"nope{EXTENSIONS[modality]}", modality, "does not exist")


@pytest.mark.parametrize("modality,ext", [
    ("image", ".png"), ("image", ".jpg"), ("audio", ".wav"), ("audio", ".flac"), ("audio", ".ogg"),
    ("audio", ".mp3"), ("video", ".mp4"), ("video", ".webm"), ("video", ".avi"), ("points", ".npy"),
    ("points", ".ply"), ("points", ".off"),
])
def test_unknown_format_with_a_known_extension(tmp_path, modality, ext):
    p = tmp_path / f"garbage{ext}"
    p.write_bytes(b"\x13\x37 this is not what the extension says \x00\xff" * 8)
    expect_error(READERS[modality], p, modality, "not a|malformed|truncated|recognised|decodable")


def test_unknown_extensions(tmp_path):
    p = tmp_path / "mesh.stl"
    p.write_text("solid cube\nendsolid\n")
    expect_error(read_points, p, "points", "unsupported extension '.stl'")
    q = tmp_path / "x.bin"
    q.write_bytes(b"1234")
    expect_error(lambda path: read_tensor_file(path, "depth"), q, "depth", "unsupported tensor file extension")


# ----------------------------------------------------------------------------------------------------- image


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tif", "gif"])
@pytest.mark.parametrize("keep", [0.5, 20])
def test_truncated_images(tmp_path, ext, keep):
    p = truncate(write_image(tmp_path / f"a.{ext}", "RGB", size=(64, 48)), keep)
    expect_error(read_image, p, "image", "truncated|corrupt|not a recognised")


@pytest.mark.parametrize("raw,problem", [
    (torch.zeros(24, 32, 3, dtype=torch.uint8), "channels last"),
    (torch.zeros(2, 3, 8, 8), "one \\(3, H, W\\) image"),
    (torch.zeros(8, 8), "one \\(3, H, W\\) image"),
    (torch.full((3, 8, 8), 255.0), "must lie in \\[0, 1\\]"),
    (torch.full((3, 8, 8), float("nan")), "NaN"),
    (torch.zeros(3, 8, 8, dtype=torch.int32), "uint8 or float"),
    (torch.zeros(3, 0, 8, dtype=torch.uint8), "no pixels"),
    ("not an image", "expected a PIL image"),
])
def test_bad_in_memory_images(raw, problem):
    expect_memory_error(T.image_transform(contract("image", image_size=16)), raw, "image", problem)


# ------------------------------------------------------------------------------------------------------ text


def test_bad_text_files(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n")
    expect_error(read_text, blank, "text", "only whitespace")
    cut = tmp_path / "cut.txt"
    cut.write_bytes("café".encode("utf-8")[:-1])  # truncated inside a multi-byte character
    expect_error(read_text, cut, "text", "not valid UTF-8")


@pytest.mark.parametrize("raw,problem", [
    ("", "empty text"), ("   \n", "empty text"), (42, "expected a string"), (torch.zeros(5, dtype=torch.long),
                                                                              "77 token ids"),
    (torch.zeros(77), "77 token ids"),
])
def test_bad_in_memory_text(raw, problem):
    expect_memory_error(T.text_transform(contract("text")), raw, "text", problem)


def test_an_empty_string_through_the_modality_names_the_item():
    ds_error = _item_error("text", [""], {"context_length": 77, "tokenizer": "clip_bpe"})
    assert "text input '<text str>'" in ds_error and "empty text" in ds_error


# ----------------------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("ext,keep", [("wav", 0.5), ("wav", 40), ("flac", 0.5), ("ogg", 0.5), ("ogg", 0.9),
                                      ("mp3", 40)])
def test_truncated_audio(tmp_path, ext, keep):
    p = truncate(write_audio(tmp_path / f"a.{ext}", seconds=1.0), keep)
    expect_error(read_audio, p, "audio", "truncated|not a recognised|zero-length")


def test_zero_length_and_nan_audio(tmp_path):
    import soundfile as sf

    sf.write(str(tmp_path / "silent.wav"), np.zeros((0, 1), np.float32), 16000)
    expect_error(read_audio, tmp_path / "silent.wav", "audio", "zero-length")
    sf.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    expect_error(read_audio, tmp_path / "nan.wav", "audio", "NaN")


@pytest.mark.parametrize("raw,problem", [
    (torch.zeros(0), "zero-length"),
    (torch.zeros(1, 0), "zero-length"),
    (torch.zeros(2, 3, 100), "1-D or \\(channels, samples\\)"),
    (torch.zeros(1000, 2), "samples first"),
    (torch.tensor([0.0, float("inf")]), "NaN or inf"),
    (torch.zeros(100, dtype=torch.bool), "float or int16"),
    ((torch.zeros(100), 0), "invalid sample rate"),
    ((torch.zeros(100), 16000, 1), "expected \\(waveform, sample_rate\\)"),
    ("noise.wav", "expected a waveform"),
])
def test_bad_in_memory_audio(raw, problem):
    expect_memory_error(T.audio_transform(contract("audio")), raw, "audio", problem)


# ----------------------------------------------------------------------------------------------------- video


@pytest.mark.parametrize("ext,keep", [("mp4", 0.5), ("webm", 40), ("avi", 40), ("mkv", 40)])
def test_truncated_video(tmp_path, ext, keep):
    p = truncate(write_video(tmp_path / f"a.{ext}", size=(64, 48)), keep)
    expect_error(read_video, p, "video", "truncated|no video stream|not a decodable")


def test_asking_a_video_for_frames_it_does_not_have(tmp_path):
    src = read_video(write_video(tmp_path / "a.mkv", frames=12, size=(64, 48)))
    expect_error(lambda path: src.get_frames([0, src.num_frames]), src.path, "video", "out of range 0..11")
    expect_error(lambda path: src.get_frames([]), src.path, "video", "zero frames")


@pytest.mark.parametrize("ext", ["mkv", "webm"])
def test_video_file_without_a_video_stream(tmp_path, ext):
    p = write_audio_only_container(tmp_path / f"sound.{ext}")
    expect_error(read_video, p, "video", "no video stream")


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_video_file_with_zero_frames(tmp_path, ext):
    import av

    p = tmp_path / f"empty.{ext}"
    with av.open(str(p), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    expect_error(read_video, p, "video", "no frames|no video stream")


@pytest.mark.parametrize("raw,problem", [
    (torch.zeros(3, 8, 8), "frames \\(T, 3, H, W\\)"),
    (torch.zeros(0, 3, 8, 8), "no frames"),
    (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), "channels last"),
    (torch.full((4, 3, 8, 8), 2.0), "must lie in \\[0, 1\\]"),
    ([1, 2, 3], "expected a video file"),
])
def test_bad_in_memory_video(raw, problem):
    expect_memory_error(T.video_transform(contract("video", image_size=16)), raw, "video", problem)


# ---------------------------------------------------------------------------------------------------- points


def test_nan_points_in_every_container(tmp_path):
    cloud = random_cloud(30)
    cloud[7, 1] = np.nan
    np.save(tmp_path / "a.npy", cloud)
    write_ply(tmp_path / "b.ply", np.nan_to_num(cloud, nan=0.0) + np.where(np.isnan(cloud), np.inf, 0),
              fmt="binary_little_endian")
    (tmp_path / "c.xyz").write_text("0 0 0\n1 nan 0\n0 1 0\n")
    for name in ("a.npy", "b.ply", "c.xyz"):
        expect_error(read_points, tmp_path / name, "points", "NaN or inf")


@pytest.mark.parametrize("fmt,keep", [("binary_little_endian", 0.6), ("ascii", 0.6), ("binary_big_endian", 100)])
def test_truncated_ply(tmp_path, fmt, keep):
    p = truncate(write_ply(tmp_path / "a.ply", random_cloud(50), fmt=fmt), keep)
    expect_error(read_points, p, "points", "truncated|malformed|not a PLY")


def test_malformed_point_text_and_meshes(tmp_path):
    (tmp_path / "ragged.xyz").write_text("0 0 0\n1 0\n0 1 0\n")
    expect_error(read_points, tmp_path / "ragged.xyz", "points", "same number")
    (tmp_path / "flat.xyz").write_text("0 0\n1 0\n")
    expect_error(read_points, tmp_path / "flat.xyz", "points", "same number \\(>= 3\\)")
    (tmp_path / "cut.off").write_text("OFF\n8 6 0\n0 0 0\n1 0 0\n")
    expect_error(read_points, tmp_path / "cut.off", "points", "truncated OFF")
    (tmp_path / "bad_index.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    expect_error(read_points, tmp_path / "bad_index.obj", "points", "vertex 8 but the mesh has 3")
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    expect_error(read_points, tmp_path / "flat.obj", "points", "zero area")
    np.save(tmp_path / "vec.npy", np.zeros(12))
    expect_error(read_points, tmp_path / "vec.npy", "points", "\\(N, 3\\+\\) array")


def test_too_few_points_names_the_file(tmp_path):
    np.save(tmp_path / "tiny.npy", random_cloud(5))
    msg = _item_error("points", [str(tmp_path / "tiny.npy")], {"num_points": 64, "channels": 3, "min_points": 16})
    assert str(tmp_path / "tiny.npy") in msg and msg.startswith("points input") and "too few points: 5" in msg


@pytest.mark.parametrize("raw,problem", [
    (torch.zeros(100, 4), "\\(N, 3\\) or \\(N, 6\\)"),
    (torch.zeros(300), "\\(N, 3\\) or \\(N, 6\\)"),
    (torch.zeros(2, 100, 3), "\\(N, 3\\) or \\(N, 6\\)"),
    (torch.zeros(5, 3), "too few points: 5"),
    (torch.tensor([[0.0, float("nan"), 0.0]] * 20), "NaN or inf"),
    (torch.zeros(20, 3, dtype=torch.bool), "numeric points"),
    ("cloud.ply", "expected a point cloud tensor"),
])
def test_bad_in_memory_points(raw, problem):
    expect_memory_error(T.points_transform({"num_points": 32, "channels": 3, "min_points": 16}), raw, "points", problem)


# --------------------------------------------------------------------------------------------------- tensors


def test_bad_tensor_files(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    expect_error(lambda p: read_tensor_file(p, "thermal"), tmp_path / "e.pt", "thermal", "empty")
    torch.save(torch.zeros(4, 4), tmp_path / "t.pt")
    truncate(tmp_path / "t.pt", 0.5)
    expect_error(lambda p: read_tensor_file(p, "depth"), tmp_path / "t.pt", "depth", "could not be loaded")
    torch.save({"a": torch.zeros(1), "b": torch.ones(1)}, tmp_path / "two.pt")
    expect_error(lambda p: read_tensor_file(p, "imu"), tmp_path / "two.pt", "imu", "one tensor .* found 2")


def test_identity_transform_rejects_wrong_shapes():
    fn = T.identity_transform({"shape": [6, 2000], "modality": "imu"})
    expect_memory_error(fn, torch.zeros(6, 100), "imu", "expected shape \\(6, 2000\\)")
    expect_memory_error(fn, "imu.npy", "imu", "expected a tensor")


# --------------------------------------------------------------------------------------------------- helpers


def _item_error(modality: str, items: list, contract: dict) -> str:
    """The message of the InputError the embedding/DataLoader path raises for ``items[0]``; also checks that
    ``skip_errors`` turns it into a reported skip."""
    from anybind.model import ItemDataset

    with pytest.raises(InputError) as info:
        ItemDataset(modality, items, contract)[0]
    i, x, message = ItemDataset(modality, items, contract, skip_errors=True)[0]
    assert (i, x) == (0, None) and message == str(info.value)
    return str(info.value)
