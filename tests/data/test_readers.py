"""Readers decode every supported format into the raw objects the transforms expect."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from assets import (SHARED_DATA, cube_mesh, gradient_rgb, random_cloud, tone, video_frames, write_audio, write_gif,
                    write_image, write_obj, write_off, write_ply, write_video)

from anybind.data.readers import (VideoSource, read_audio, read_image, read_points, read_tensor_file, read_text,
                                  read_video)
from anybind.data.pointfiles import MESH_SAMPLES

# ----------------------------------------------------------------------------------------------------- image

LOSSLESS = ["png", "bmp", "tif", "webp"]


@pytest.mark.parametrize("ext", LOSSLESS)
def test_lossless_rgb_images_decode_exactly(tmp_path, ext):
    kw = {"lossless": True} if ext == "webp" else {}
    img = read_image(write_image(tmp_path / f"a.{ext}", "RGB", **kw))
    assert img.mode == "RGB" and img.size == (32, 24)
    np.testing.assert_array_equal(np.asarray(img), gradient_rgb(24, 32))


@pytest.mark.parametrize("ext,mode", [
    ("png", "L"), ("png", "LA"), ("png", "P"), ("png", "I;16"), ("png", "1"),
    ("jpg", "RGB"), ("jpg", "L"), ("jpg", "CMYK"),
    ("webp", "RGB"), ("bmp", "P"), ("bmp", "L"), ("bmp", "1"),
    ("tif", "I;16"), ("tif", "F"), ("tif", "CMYK"), ("tif", "L"), ("gif", "P"), ("gif", "L"),
])
def test_every_mode_becomes_8bit_rgb_with_the_right_content(tmp_path, ext, mode):
    img = read_image(write_image(tmp_path / f"a.{ext}", mode))
    assert img.mode == "RGB" and img.size == (32, 24)
    got = np.asarray(img).astype(np.float64)
    ref = gradient_rgb(24, 32).astype(np.float64)
    if mode in ("L", "LA", "I;16", "F"):  # grey: the luma of the gradient, replicated
        luma = ref @ np.array([0.299, 0.587, 0.114])
        assert np.abs(got - luma[..., None]).mean() < 6
        assert np.array_equal(got[..., 0], got[..., 1])
    elif mode == "1":  # dithered black/white: only the two extremes, brighter to the bottom-right
        assert set(np.unique(got)) <= {0.0, 255.0}
        assert got[-6:, -8:].mean() > got[:6, :8].mean()
    else:  # lossy or quantized colour: close on average
        assert np.abs(got - ref).mean() < 20


def test_16bit_image_uses_the_full_range(tmp_path):
    from PIL import Image

    a = np.array([[0, 257 * 128, 65535]], dtype=np.uint16).repeat(4, 0)
    Image.fromarray(a).save(tmp_path / "a.png")
    px = np.asarray(read_image(tmp_path / "a.png"))[0, :, 0]
    assert px.tolist() == [0, 128, 255]


def test_transparency_is_composited_over_white(tmp_path):
    img = np.asarray(read_image(write_image(tmp_path / "a.png", "RGBA")))
    assert (img[:, :16] == 255).all()  # left half was fully transparent
    np.testing.assert_array_equal(img[:, 16:], gradient_rgb(24, 32)[:, 16:])


def test_gif_gives_its_first_frame(tmp_path):
    img = np.asarray(read_image(write_gif(tmp_path / "a.gif")))
    assert img.shape == (12, 16, 3)
    assert img[..., 0].min() > 200 and img[..., 2].max() < 50  # red, not the later blue frames


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = Image.fromarray(gradient_rgb(24, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(tmp_path / "a.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "a.jpg").size == (24, 32)


def test_mnist_digit_from_shared_data(tmp_path):
    src = SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not src.exists():
        pytest.skip(f"shared data missing: {src}")
    from PIL import Image

    with gzip.open(src, "rb") as f:
        header = np.frombuffer(f.read(16), dtype=">i4")
        digit = np.frombuffer(f.read(28 * 28), dtype=np.uint8).reshape(28, 28)
    assert header[0] == 2051 and tuple(header[2:]) == (28, 28)
    Image.fromarray(digit, mode="L").save(tmp_path / "digit.png")
    img = np.asarray(read_image(tmp_path / "digit.png"))
    assert img.shape == (28, 28, 3)
    np.testing.assert_array_equal(img[..., 1], digit)


# ------------------------------------------------------------------------------------------------------ text


def test_text_file_is_utf8_stripped_and_bom_free(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeff  un café à Zürich \n\n".encode("utf-8"))
    assert read_text(p) == "un café à Zürich"


# ----------------------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("ext,rate,channels", [
    ("wav", 8000, 1), ("wav", 44100, 2), ("flac", 22050, 1), ("flac", 48000, 2), ("ogg", 16000, 1),
    ("ogg", 44100, 2), ("mp3", 22050, 1), ("mp3", 44100, 2),
])
def test_audio_formats_rates_and_channels(tmp_path, ext, rate, channels):
    p = write_audio(tmp_path / f"a.{ext}", seconds=0.5, sample_rate=rate, channels=channels)
    wave, sr = read_audio(p)
    assert sr == rate and wave.dtype == torch.float32 and wave.shape[0] == channels
    assert abs(wave.shape[1] - rate // 2) <= 0.1 * rate  # lossy codecs may add priming samples
    ref = torch.from_numpy(tone(0.5, rate, channels).T)
    if ext in ("wav", "flac"):  # lossless: 16-bit quantization only
        torch.testing.assert_close(wave, ref, atol=1e-4, rtol=0)
    else:  # lossy: the same loudness per channel
        rms = wave.pow(2).mean(1).sqrt()
        torch.testing.assert_close(rms, torch.full((channels,), 0.5 / 2 ** 0.5), atol=0.06, rtol=0)


def test_ogg_opus(tmp_path):
    wave, sr = read_audio(write_audio(tmp_path / "a.ogg", seconds=0.5, sample_rate=48000, subtype="OPUS"))
    assert sr == 48000 and wave.shape[0] == 1 and abs(wave.shape[1] - 24000) < 4800
    assert abs(float(wave.pow(2).mean().sqrt()) - 0.5 / 2 ** 0.5) < 0.06


def test_pcm16_decodes_as_int16_over_32768(tmp_path):
    import soundfile as sf

    pcm = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    sf.write(str(tmp_path / "a.wav"), pcm, 16000, subtype="PCM_16")
    wave, _ = read_audio(tmp_path / "a.wav")
    torch.testing.assert_close(wave[0], torch.from_numpy(pcm.astype(np.float32) / 32768), atol=0, rtol=0)


def test_fsdd_recording_from_shared_data():
    p = SHARED_DATA / "fsdd" / "recordings" / "0_george_0.wav"
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    wave, sr = read_audio(p)
    assert sr == 8000 and wave.shape[0] == 1 and 0.1 < wave.shape[1] / sr < 2.0
    assert wave.abs().max() > 0.05  # someone is speaking


def test_ogg_clips_from_shared_data():
    clips = sorted((SHARED_DATA / "audio_clips").glob("*.ogg"))
    if not clips:
        pytest.skip("shared data missing: audio_clips/*.ogg")
    for p in clips[:4]:
        wave, sr = read_audio(p)
        assert sr > 0 and wave.ndim == 2 and wave.shape[1] > sr  # every clip lasts more than a second
        assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0


# ----------------------------------------------------------------------------------------------------- video


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mkv", "mov"])
def test_video_containers_decode_the_requested_frames(tmp_path, ext):
    src = read_video(write_video(tmp_path / f"a.{ext}", frames=12, fps=12, size=(64, 48)))
    assert isinstance(src, VideoSource) and src.num_frames == 12 and src.fps == pytest.approx(12, rel=0.01)
    idx = [0, 5, 11, 5]
    frames = src.get_frames(idx)
    assert frames.dtype == torch.uint8 and frames.shape == (4, 48, 64, 3)
    expected = torch.from_numpy(video_frames(12, (64, 48))[idx]).float()
    assert (frames.float().mean((1, 2, 3)) - expected.mean((1, 2, 3))).abs().max() < 6  # lossy codecs
    assert src.frames_decoded == 3 and src.batches_decoded == 1  # the duplicate is decoded once


def test_video_source_pickles_without_its_decoder(tmp_path):
    src = read_video(write_video(tmp_path / "a.mp4", size=(64, 48)))
    src.get_frames([1])
    clone = pickle.loads(pickle.dumps(src))
    assert clone.num_frames == src.num_frames and clone._reader is None
    torch.testing.assert_close(clone.get_frames([3]), src.get_frames([3]))


def test_video_source_close_frees_the_decoder_and_reopens_on_demand(tmp_path):
    with read_video(write_video(tmp_path / "a.mp4", size=(64, 48))) as src:
        first = src.get_frames([2])
        assert src._reader is not None
        src.close()
        assert src._reader is None
        torch.testing.assert_close(src.get_frames([2]), first)  # reopened for the call
    assert src._reader is None  # the with block closed it


def _decoder_handles_in_child(src, conn):
    conn.send((src._reader is not None, src._reader._handle is None))
    conn.close()


def test_forked_children_never_free_the_parents_decoders(tmp_path):
    """A decoder alive at fork time (e.g. held by a traceback until the next collection) must not be freed by a
    DataLoader worker: its decoding threads exist only in the parent, and freeing the copy would hang the worker."""
    import multiprocessing as mp

    src = read_video(write_video(tmp_path / "a.mp4", size=(64, 48)))
    src.get_frames([0])
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_decoder_handles_in_child, args=(src, child))
    proc.start()
    assert parent.poll(30), "the forked child did not answer"
    has_reader, disowned = parent.recv()
    proc.join(30)
    assert proc.exitcode == 0 and has_reader and disowned
    assert src._reader._handle is not None  # the parent's decoder is untouched
    torch.testing.assert_close(src.get_frames([0]), src.get_frames([0]))


def test_big_buck_bunny_from_shared_data():
    p = SHARED_DATA / "video" / "big_buck_bunny_0_30.webm"
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    src = read_video(p)
    assert src.num_frames == 720 and src.fps == pytest.approx(24) and src.duration == pytest.approx(30)
    assert src.frames_decoded == 0  # opening decodes nothing
    frames = src.get_frames([0, 719])
    assert frames.shape == (2, 720, 1280, 3)


# ---------------------------------------------------------------------------------------------------- points


def test_npy_and_npz(tmp_path):
    cloud = random_cloud(50)
    np.save(tmp_path / "a.npy", cloud)
    torch.testing.assert_close(read_points(tmp_path / "a.npy"), torch.from_numpy(cloud))
    np.savez(tmp_path / "b.npz", labels=np.zeros(3), points=cloud)  # "points" wins over the first array
    torch.testing.assert_close(read_points(tmp_path / "b.npz"), torch.from_numpy(cloud))
    np.savez(tmp_path / "c.npz", cloud[:20])
    assert read_points(tmp_path / "c.npz").shape == (20, 3)


def test_extra_columns_are_colour_only_when_they_look_like_colour(tmp_path):
    rgb_cloud = random_cloud(40, rgb=True)
    np.save(tmp_path / "rgb.npy", rgb_cloud)
    assert read_points(tmp_path / "rgb.npy").shape == (40, 6)
    u8 = rgb_cloud.copy()
    u8[:, 3:] = np.round(u8[:, 3:] * 255)
    np.save(tmp_path / "u8.npy", u8)
    torch.testing.assert_close(read_points(tmp_path / "u8.npy")[:, 3:], torch.from_numpy(u8[:, 3:] / 255))
    normals = rgb_cloud.copy()
    normals[:, 3:] = normals[:, 3:] * 2 - 1  # negative: normals, dropped
    np.save(tmp_path / "n.npy", normals)
    assert read_points(tmp_path / "n.npy").shape == (40, 3)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_point_clouds(tmp_path, fmt):
    cloud = random_cloud(30)
    rgb = np.random.default_rng(1).integers(0, 256, (30, 3))
    pts = read_points(write_ply(tmp_path / "a.ply", cloud, rgb, fmt=fmt))
    assert pts.shape == (30, 6)
    torch.testing.assert_close(pts[:, :3], torch.from_numpy(cloud), atol=1e-5, rtol=0)
    torch.testing.assert_close(pts[:, 3:], torch.from_numpy(rgb / 255).float())
    assert read_points(write_ply(tmp_path / "b.ply", cloud, fmt=fmt)).shape == (30, 3)


def _on_cube_surface(pts: torch.Tensor) -> bool:
    a = pts[:, :3].abs()
    return bool((a <= 0.5 + 1e-5).all() and ((a.amax(1) - 0.5).abs() < 1e-5).all())


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_meshes_are_surface_sampled(tmp_path, fmt):
    v, quads = cube_mesh()
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    pts = read_points(write_ply(tmp_path / "cube.ply", v, faces=tris, fmt=fmt))
    assert pts.shape == (MESH_SAMPLES, 3) and _on_cube_surface(pts)


def test_off_and_obj_meshes_sample_the_whole_surface_deterministically(tmp_path):
    v, quads = cube_mesh()
    for p in (write_off(tmp_path / "a.off", v, quads), write_off(tmp_path / "b.off", v, quads, glued_header=True),
              write_obj(tmp_path / "c.obj", v, quads), write_obj(tmp_path / "d.obj", v, quads, slashes=False)):
        pts = read_points(p)
        assert pts.shape == (MESH_SAMPLES, 3) and _on_cube_surface(pts), p.name
        counts = torch.stack([(pts[:, i] - s * 0.5).abs() < 1e-5 for i in range(3) for s in (-1, 1)]).sum(1)
        assert (counts > MESH_SAMPLES / 6 * 0.8).all(), counts  # every face gets its share (equal areas)
        torch.testing.assert_close(read_points(p), pts)  # fixed seed


def test_obj_negative_indices_and_vertex_colours(tmp_path):
    p = tmp_path / "tri.obj"
    p.write_text("v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 0 1 0 0 0 1\nf -3 -2 -1\n")
    pts = read_points(p)
    assert pts.shape == (MESH_SAMPLES, 6)
    torch.testing.assert_close(pts[:, 3:].sum(1), torch.ones(MESH_SAMPLES), atol=1e-5, rtol=0)  # barycentric
    assert (pts[:, 2] == 0).all() and (pts[:, 0] + pts[:, 1] <= 1 + 1e-6).all()


@pytest.mark.parametrize("name,text", [
    ("a.xyz", "# header comment\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n"),
    ("a.txt", "0,0,0\n1,0,0\n0,1,0\n0,0,1\n"),
    ("a.pts", "4\n0 0 0\n1 0 0\n// comment\n0 1 0\n0 0 1\n"),
])
def test_text_point_files(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    torch.testing.assert_close(read_points(tmp_path / name), torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32))


def test_modelnet_style_normals_are_dropped(tmp_path):
    (tmp_path / "a.txt").write_text("0.1,0.2,0.3,-0.5,0.5,0.7\n0.4,0.5,0.6,0.1,-0.9,0.2\n")
    assert read_points(tmp_path / "a.txt").shape == (2, 3)


# --------------------------------------------------------------------------------------------------- tensors


def test_tensor_files(tmp_path):
    t = torch.randn(1, 8, 8)
    torch.save(t, tmp_path / "a.pt")
    torch.save({"depth": t}, tmp_path / "b.pt")
    np.save(tmp_path / "c.npy", t.numpy())
    for name in ("a.pt", "b.pt", "c.npy"):
        torch.testing.assert_close(read_tensor_file(tmp_path / name), t)
