"""The generated world: files, manifests, determinism, cache, held-out combinations, and that every modality
really carries its attributes (recovered here with simple hand-made features)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import anybind
from anybind.data.world import (COLORS, MOTIONS, SHAPES, SPLITS, Attributes, all_combinations, caption,
                                generate_world, label_of, parse_caption, shared_attributes)
from anybind.data.world.__main__ import main as world_cli
from anybind.data.world.attributes import COLOR_BASE_HZ, COLOR_RGB, MOTION_IMAGE, split_combinations
from anybind.data.world.cloud import MARKER_HALF, make_cloud
from anybind.data.world.render import render_scene, render_sprite
from anybind.data.world.sound import TIMBRES, synthesize
from anybind.layers.pointops import normalize_unit_sphere

TINY = dict(n_train=20, n_val=4, n_test=4, n_heldout=4, num_points=256, seed=3)
MODALITY_KEYS = ("image", "audio", "video", "points")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), num_workers=0, progress=False, **TINY)


def rows_of(info, split):
    return [json.loads(line) for line in info.manifests[split].read_text().splitlines()]


def all_rows(info):
    return [r for s in SPLITS for r in rows_of(info, s)]


# --- simple features --------------------------------------------------------------------------------------------

def hue_deg(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of (..., 3) float RGB."""
    r, g, b = np.moveaxis(rgb, -1, 0)
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    mx = rgb.max(-1)
    return (mx - rgb.min(-1)) / np.maximum(mx, 1e-6)


def nearest_color(hues: np.ndarray) -> str:
    """Colour whose albedo hue is nearest to the circular mean of ``hues``."""
    ang = np.deg2rad(hues)
    mean = np.rad2deg(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360
    ref = {c: hue_deg(np.array(rgb)) for c, rgb in COLOR_RGB.items()}
    return min(ref, key=lambda c: min(abs(mean - ref[c]), 360 - abs(mean - ref[c])))


def object_pixels(img: np.ndarray, threshold: float = 0.7) -> np.ndarray:
    """Mask of strongly coloured pixels: the object itself, not its faded ghosts or the grey background."""
    return saturation(img.astype(np.float64) / 255) > threshold


def ghost_pixels(img: np.ndarray) -> np.ndarray:
    s = saturation(img.astype(np.float64) / 255)
    return (s > 0.12) & (s < 0.45)


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def spectrum_peak_hz(wav: np.ndarray, sr: int) -> float:
    mag = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(mag)])


def nearest_pitch_color(hz: float) -> str:
    return min(COLOR_BASE_HZ, key=lambda c: abs(np.log2(hz / COLOR_BASE_HZ[c])))


def note_region(wav: np.ndarray) -> np.ndarray:
    """The samples of the note (where the smoothed level exceeds 20 % of its peak)."""
    level = np.convolve(np.abs(wav), np.ones(160) / 160, mode="same")
    on = np.nonzero(level > 0.2 * level.max())[0]
    return wav[on[0]:on[-1] + 1]


# --- manifests and files -----------------------------------------------------------------------------------------

def test_manifests_list_every_modality_with_relative_paths_and_labels(world):
    assert set(world.manifests) == set(SPLITS)
    for split, n in (("train", 20), ("val", 4), ("test", 4), ("test_heldout", 4)):
        rows = rows_of(world, split)
        assert len(rows) == n == world.counts[split]
        assert len({r["id"] for r in rows}) == n
        for r in rows:
            assert r["split"] == split
            assert r["label"] == label_of(r["attributes"]) == Attributes(**r["attributes"]).label
            assert all(r[k] == r["attributes"][k] for k in ("shape", "color", "size", "motion"))
            assert isinstance(r["text"], str) and r["text"]
            for m in MODALITY_KEYS:
                assert not Path(r[m]).is_absolute()
                assert (world.manifests[split].parent / r[m]).is_file()
    assert world.visibility == {m: ["color", "shape", "size", "motion"]
                                for m in ("image", "text", "audio", "video", "points")}


def test_match_keys_use_the_attributes_both_modalities_express(world):
    a = {"shape": "cube", "color": "red", "size": "large", "motion": "left"}
    assert label_of(a) == "red-cube-large-left"
    assert shared_attributes("image", "audio", world.visibility) == ("color", "shape", "size", "motion")
    partial = {**world.visibility, "points": ["shape", "size", "motion"]}  # e.g. an xyz-only points encoder
    assert label_of(a, shared_attributes("points", "text", partial)) == "cube-large-left"
    with pytest.raises(KeyError, match="depth"):
        shared_attributes("depth", "image")
    with pytest.raises(ValueError, match="unknown attribute"):
        label_of(a, ("hue",))


def test_manifest_loads_with_anybind_manifest_reader(world):
    from anybind.data.manifest import load_manifest

    m = load_manifest(world.manifests["val"])
    assert len(m) == 4
    assert m.modalities() == ["audio", "image", "points", "text", "video"]
    s = m[0]
    assert s.key() == s.label and s.key("shape") in SHAPES
    assert Path(s.items["video"]).is_file()


def test_every_file_is_readable_by_anybind_readers(world):
    for r in rows_of(world, "test") + rows_of(world, "test_heldout"):
        root = world.manifests["test"].parent
        img = anybind.get_modality("image").read(root / r["image"])
        assert img.size == (64, 64) and img.mode == "RGB"
        wav, sr = anybind.get_modality("audio").read(root / r["audio"])
        assert sr == 16000 and tuple(wav.shape) == (1, 16000) and wav.abs().max() > 0.05
        video = anybind.get_modality("video").read(root / r["video"])
        assert video.num_frames == 8
        frames = video.get_frames([0, 7])
        assert tuple(frames.shape) == (2, 64, 64, 3) and frames.dtype == torch.uint8
        pts = anybind.get_modality("points").read(root / r["points"])
        assert tuple(pts.shape) == (256, 6) and torch.isfinite(pts).all()
        assert 0 <= pts[:, 3:].min() and pts[:, 3:].max() <= 1


def test_world_files_go_through_the_transforms(world):
    from anybind.data.transforms import audio_transform, points_transform, video_transform

    r = rows_of(world, "val")[0]
    root = world.manifests["val"].parent
    a = audio_transform({"sample_rate": 16000, "num_mel_bins": 32, "target_length": 48, "clip_duration": 0.5,
                         "clips": 1, "mean": -4.268, "std": 9.138})(anybind.get_modality("audio").read(root / r["audio"]))
    assert a.shape == (1, 1, 32, 48) and torch.isfinite(a).all()
    v = video_transform({"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "frames": 2, "clips": 2,
                         "clip_duration": 0.5})(anybind.get_modality("video").read(root / r["video"]))
    assert v.shape == (2, 3, 2, 32, 32)
    p = points_transform({"num_points": 64, "channels": 6, "min_points": 16})(
        anybind.get_modality("points").read(root / r["points"]))
    assert p.shape == (64, 6)


# --- determinism and cache ---------------------------------------------------------------------------------------

def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_with_any_number_of_workers(world, tmp_path):
    # 32 samples with 2 workers goes through the process pool; the fixture was rendered in-process.
    again = generate_world(tmp_path / "again", num_workers=2, progress=False, **TINY)
    assert again.reused is False
    a, b = _file_bytes(world.root), _file_bytes(again.root)
    assert a.keys() == b.keys() and len(a) == 32 * 4 + 4 + 1
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]


def test_other_seed_gives_other_samples(tmp_path):
    small = dict(n_train=4, n_val=0, n_test=0, n_heldout=0, num_points=256, num_workers=0, progress=False)
    a = generate_world(tmp_path / "a", seed=1, **small)
    b = generate_world(tmp_path / "b", seed=2, **small)
    ra, rb = rows_of(a, "train"), rows_of(b, "train")
    assert [r["label"] for r in ra] != [r["label"] for r in rb]
    assert (a.root / ra[0]["image"]).read_bytes() != (b.root / rb[0]["image"]).read_bytes()


def test_cache_reuses_identical_parameters_and_regenerates_on_change(tmp_path):
    small = dict(n_train=3, n_val=1, n_test=1, n_heldout=1, num_points=256, num_workers=0, progress=False)
    first = generate_world(tmp_path, **small)
    assert first.reused is False
    stamp = json.loads((tmp_path / "world.json").read_text())
    assert stamp["params"]["n_train"] == 3 and stamp["version"] >= 1
    png = tmp_path / rows_of(first, "train")[0]["image"]
    mtime = png.stat().st_mtime_ns

    second = generate_world(tmp_path, **small)
    assert second.reused is True and second.manifests == first.manifests
    assert png.stat().st_mtime_ns == mtime

    third = generate_world(tmp_path, **{**small, "n_train": 2})
    assert third.reused is False and len(rows_of(third, "train")) == 2
    assert not (tmp_path / "train" / "image" / "train-00002.png").exists()  # the old world's files are gone

    # An interrupted generation leaves its marker and is never reused, even beside a matching stamp.
    (tmp_path / ".world-incomplete").touch()
    assert generate_world(tmp_path, **{**small, "n_train": 2}).reused is False
    assert not (tmp_path / ".world-incomplete").exists()
    assert generate_world(tmp_path, force=True, **{**small, "n_train": 2}).reused is False


def test_bad_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        generate_world(tmp_path, image_size=63, n_train=1, num_workers=0)
    with pytest.raises(ValueError, match="heldout"):
        generate_world(tmp_path, heldout_fraction=0.0, n_train=1, n_heldout=2, num_workers=0)
    with pytest.raises(ValueError, match="num_points"):
        generate_world(tmp_path, num_points=100, n_train=1, num_workers=0)
    with pytest.raises(ValueError, match="video_codec"):
        generate_world(tmp_path, video_codec="no-such-codec", n_train=1, num_workers=0)
    assert not any(tmp_path.iterdir())  # nothing written before the parameters are checked
    with pytest.raises(ValueError, match="unknown color"):
        Attributes("cube", "orange", "small", "left")


def test_folders_not_made_by_the_generator_are_never_cleared(tmp_path):
    (tmp_path / "train").mkdir()
    keep = tmp_path / "train" / "mine.txt"
    keep.write_text("user data")
    with pytest.raises(FileExistsError, match="world.json"):
        generate_world(tmp_path, n_train=1, n_val=0, n_test=0, n_heldout=0, num_workers=0, progress=False)
    assert keep.read_text() == "user data"


def test_cli_generates_then_reuses(tmp_path, capsys):
    args = [str(tmp_path), "--n-train", "2", "--n-val", "1", "--n-test", "1", "--n-heldout", "1",
            "--num-points", "256", "--num-workers", "0", "--quiet"]
    world_cli(args)
    assert "generated" in capsys.readouterr().out
    world_cli(args)
    assert "reused" in capsys.readouterr().out
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 2


# --- splits ------------------------------------------------------------------------------------------------------

def test_heldout_combinations_never_appear_in_train_val_or_test(world):
    held = set(world.heldout_combinations)
    assert len(held) == round(0.1 * 384)
    seen_labels = {r["label"] for s in ("train", "val", "test") for r in rows_of(world, s)}
    assert not held & seen_labels
    assert {r["label"] for r in rows_of(world, "test_heldout")} <= held


def test_heldout_split_keeps_every_attribute_pair_in_the_seen_combinations():
    combos = all_combinations()
    seen, held = split_combinations(combos, 0.1, seed=0)
    assert len(seen) + len(held) == 384 and not set(seen) & set(held)
    pairs = lambda cs: {p for c in cs for p in itertools.combinations(sorted(c.as_dict().items()), 2)}  # noqa: E731
    assert pairs(seen) == pairs(combos)
    assert split_combinations(combos, 0.1, seed=0) == (seen, held)
    assert split_combinations(combos, 0.1, seed=1)[1] != held


def test_training_combinations_are_balanced(tmp_path):
    from anybind.data.world.generate import WorldParams, plan

    assignment, held = plan(WorldParams(n_train=700, seed=0))
    counts = {}
    for a in assignment["train"]:
        counts[a] = counts.get(a, 0) + 1
    assert len(counts) == 384 - len(held) and max(counts.values()) - min(counts.values()) <= 1


# --- every modality expresses every attribute --------------------------------------------------------------------

def test_captions_name_all_four_attributes(world):
    for r in all_rows(world):
        assert parse_caption(r["text"]) == r["attributes"]
    rng = np.random.default_rng(0)
    texts = set()
    for a in all_combinations()[::5]:
        for _ in range(3):
            t = caption(a.shape, a.color, a.size, a.motion, rng)
            assert parse_caption(t) == a.as_dict(), t
            texts.add(t)
    assert len(texts) > 0.95 * len(all_combinations()[::5]) * 3  # varied wording


def test_image_and_video_show_colour_size_and_motion(world):
    root = world.root
    areas = {"small": [], "large": []}
    for r in all_rows(world):
        img = np.asarray(anybind.get_modality("image").read(root / r["image"]))
        obj = object_pixels(img)
        assert nearest_color(hue_deg(img[obj] / 255.0)) == r["color"], r["id"]
        areas[r["size"]].append(obj.sum())
        # The faded trail lies behind the object.
        direction = np.array(MOTION_IMAGE[r["motion"]])
        assert (centroid(ghost_pixels(img) & ~obj) - centroid(obj)) @ direction < -1.0, r["id"]

        frames = anybind.get_modality("video").read(root / r["video"]).get_frames(list(range(8))).numpy()
        first, last = object_pixels(frames[0]), object_pixels(frames[-1])
        assert nearest_color(hue_deg(frames[0][first] / 255.0)) == r["color"], r["id"]
        assert (centroid(last) - centroid(first)) @ direction > 0.2 * 64, r["id"]   # it travels its way
    assert np.median(areas["large"]) > 2.0 * np.median(areas["small"])


@pytest.mark.parametrize("shape", SHAPES)
def test_image_size_is_visible_for_each_shape(shape):
    rng = np.random.default_rng(0)
    area = {z: [object_pixels(render_scene(shape, "red", z, "left", rng)[0]).sum() for _ in range(4)]
            for z in ("small", "large")}
    assert min(area["large"]) > 1.8 * max(area["small"])


def test_shapes_have_distinct_silhouettes():
    """1-nearest-neighbour on sprite silhouettes recovers the shape of fresh renders."""
    def mask(shape, seed):
        s = render_sprite(shape, np.array([0.5, 0.5, 0.5]), (32.0, 32.0), 24.0, np.random.default_rng(seed))
        return (s.alpha > 0.5).ravel().astype(float)

    refs = {sh: [mask(sh, 100 + k) for k in range(3)] for sh in SHAPES}
    for sh in SHAPES:
        for seed in range(2):
            m = mask(sh, seed)
            iou = {o: max((m * r).sum() / np.maximum(m, r).sum() for r in refs[o]) for o in SHAPES}
            assert max(iou, key=iou.get) == sh, (sh, seed, iou)


def band_pitch_hz(x: np.ndarray, sr: int, around_hz: float) -> float:
    """Spectral centroid within +-4.5 semitones of ``around_hz`` (zero-padded FFT): the fundamental's pitch."""
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=16384)) ** 2
    f = np.fft.rfftfreq(16384, 1 / sr)
    band = (f > around_hz * 2 ** (-4.5 / 12)) & (f < around_hz * 2 ** (4.5 / 12))
    return float((f[band] * mag[band]).sum() / mag[band].sum())


def contour_code(note: np.ndarray, sr: int) -> tuple[float, float]:
    """Pitch change (semitones) from the note's first fifth to its middle fifth, and from there to its last fifth."""
    n, f0 = len(note), spectrum_peak_hz(note, sr)
    pitch = [band_pitch_hz(note[int(a * n):int(b * n)], sr, f0) for a, b in ((0, 0.2), (0.4, 0.6), (0.8, 1.0))]
    return 12 * np.log2(pitch[1] / pitch[0]), 12 * np.log2(pitch[2] / pitch[1])


EXPECTED_CONTOUR = {"up": (1, 1), "down": (-1, -1), "left": (1, -1), "right": (-1, 1)}


def test_sound_shows_colour_size_and_motion(world):
    root = world.root
    energy, duration = {"small": [], "large": []}, {"small": [], "large": []}
    for r in all_rows(world):
        wav, sr = anybind.get_modality("audio").read(root / r["audio"])
        wav = wav[0].numpy().astype(np.float64)
        note = note_region(wav)
        assert nearest_pitch_color(spectrum_peak_hz(note, sr)) == r["color"], r["id"]
        energy[r["size"]].append((wav ** 2).sum())
        duration[r["size"]].append(len(note) / sr)
        first, second = contour_code(note, sr)
        want = EXPECTED_CONTOUR[r["motion"]]
        assert first * want[0] > 0.8 and second * want[1] > 0.8, (r["id"], first, second)
    assert min(duration["large"]) > 1.6 * max(duration["small"])
    assert np.median(energy["large"]) > 4 * np.median(energy["small"])


@pytest.mark.parametrize("motion", MOTIONS)
def test_pitch_contour_codes_the_motion(motion):
    for size, seed in itertools.product(("small", "large"), range(3)):
        wav = synthesize("cone", COLORS[seed], size, motion, np.random.default_rng(seed)).astype(np.float64)
        first, second = contour_code(note_region(wav), 16000)
        want = EXPECTED_CONTOUR[motion]
        assert first * want[0] > 1.0 and second * want[1] > 1.0, (size, seed, first, second)


@pytest.mark.parametrize("shape", SHAPES)
def test_sound_timbre_identifies_the_shape(shape, monkeypatch):
    """The partial amplitudes at the recipe ratios match the shape's own recipe best (on a steady pitch)."""
    from anybind.data.world import sound

    monkeypatch.setitem(sound.CONTOURS, "left", (0.0, 0.0, 0.0))
    ratios = sorted({r for recipe in TIMBRES.values() for r, _ in recipe})

    def profile(recipe):
        v = np.array([dict(recipe).get(r, 0.0) for r in ratios])
        return v / np.linalg.norm(v)

    for seed in range(2):
        color = COLORS[seed * 3]
        wav = synthesize(shape, color, "large", "left", np.random.default_rng(seed)).astype(np.float64)
        note = note_region(wav)
        f0 = spectrum_peak_hz(note, 16000)
        mag = np.abs(np.fft.rfft(note * np.hanning(len(note))))
        freqs = np.fft.rfftfreq(len(note), 1 / 16000)
        measured = np.array([mag[np.abs(freqs - r * f0) < 0.02 * r * f0].max(initial=0.0) for r in ratios])
        measured /= np.linalg.norm(measured)
        scores = {s: measured @ profile(recipe) for s, recipe in TIMBRES.items()}
        assert max(scores, key=scores.get) == shape, scores


def test_points_show_colour_size_and_motion(world):
    root = world.root
    extent = {"small": [], "large": []}
    for r in all_rows(world):
        pts = anybind.get_modality("points").read(root / r["points"]).double()
        xyz = normalize_unit_sphere(pts[:, :3]).numpy()
        rgb = pts[:, 3:].numpy()
        obj = saturation(rgb) > 0.75
        ghost = (saturation(rgb) > 0.1) & ~obj
        assert obj.sum() > 0.4 * len(pts) and ghost.sum() > 0.1 * len(pts)
        assert nearest_color(hue_deg(rgb[obj])) == r["color"], r["id"]
        c = xyz[obj].mean(0)
        extent[r["size"]].append(np.linalg.norm(xyz[obj] - c, axis=1).max())
        behind = -np.array({"left": (-1, 0, 0), "right": (1, 0, 0), "up": (0, 1, 0), "down": (0, -1, 0)}[r["motion"]])
        assert (xyz[ghost].mean(0) - c) @ behind > 0.03, r["id"]
    # Size survives the unit-sphere normalisation thanks to the fixed corner markers.
    assert min(extent["large"]) > 1.1 * max(extent["small"])


@pytest.mark.parametrize("shape", SHAPES)
def test_point_cloud_size_survives_normalisation_for_each_shape(shape):
    def extent(size, seed):
        c = torch.from_numpy(make_cloud(shape, "green", size, "left", np.random.default_rng(seed), num_points=512))
        xyz = normalize_unit_sphere(c[:, :3]).numpy()
        obj = xyz[saturation(c[:, 3:].numpy()) > 0.75]
        return np.linalg.norm(obj - obj.mean(0), axis=1).max()

    assert min(extent("large", s) for s in range(3)) > 1.6 * max(extent("small", s) for s in range(3))


def test_point_cloud_markers_fix_the_scale():
    cloud = make_cloud("sphere", "blue", "small", "up", np.random.default_rng(0), num_points=512)
    corners = np.abs(cloud[:, :3]).min(1) > 0.9 * MARKER_HALF
    assert corners.sum() == 64
    far = np.linalg.norm(cloud[:, :3], axis=1)
    assert far[corners].min() > far[~corners].max()


def test_point_cloud_shapes_are_recoverable_by_chamfer_distance():
    def xyz(shape, seed):
        c = make_cloud(shape, "red", "large", "left", np.random.default_rng(seed), num_points=512)
        obj = saturation(c[:, 3:]) > 0.75
        p = c[obj, :3]
        return p - p.mean(0)

    def chamfer(a, b):
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        return d.min(1).mean() + d.min(0).mean()

    refs = {s: xyz(s, 100) for s in SHAPES}
    for s in SHAPES:
        probe = xyz(s, 1)
        assert min(refs, key=lambda o: chamfer(probe, refs[o])) == s


def test_renderers_are_deterministic_functions_of_the_generator():
    a = render_scene("torus", "cyan", "large", "down", np.random.default_rng(5))
    b = render_scene("torus", "cyan", "large", "down", np.random.default_rng(5))
    c = render_scene("torus", "cyan", "large", "down", np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    w1 = synthesize("cube", "red", "small", "up", np.random.default_rng(1))
    assert np.array_equal(w1, synthesize("cube", "red", "small", "up", np.random.default_rng(1)))
    assert not np.array_equal(w1, synthesize("cube", "red", "small", "up", np.random.default_rng(2)))


def test_motion_words_cover_every_motion():
    for m in MOTIONS:
        text = caption("cube", "red", "small", m, np.random.default_rng(0))
        assert parse_caption(text)["motion"] == m
