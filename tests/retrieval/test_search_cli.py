"""anybind-search as a user meets it: cross-modal hits by default (and saying so), --target still choosing, JSON
alone on stdout, contact sheets that draw every modality and keep names inside their tiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from retrieval_assets import make_collection_with_videos, tiny_model, write_video, write_wav

import anybind
from anybind.retrieval import build_index, embed_to_store
from anybind.retrieval.index import Hit
from anybind.retrieval.sheet import (audio_thumbnail, contact_sheet, fit_lines, points_thumbnail, tile_image,
                                     video_thumbnail)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    manifest = make_collection_with_videos(root, captions=False)
    model = tiny_model(("image", "text", "audio", "points", "video"))
    ckpt = anybind.save_model(root / "model", model)
    store = embed_to_store(model, manifest, root / "store", progress=False, checkpoint=ckpt).store
    build_index(store, kind="flat").save(root / "index")
    return root


def search_cli(*args, cwd=None):
    code = "import sys; from anybind.cli import search_main; sys.argv[0] = 'anybind-search'; search_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=240, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))


def test_default_search_is_cross_modal_and_says_so(indexed, tmp_path):
    proc = search_cli("--index", str(indexed / "index"), "-q", "a red thing number 0", "-k", "2",
                      "--sheet", str(tmp_path / "sheet.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # stdout is the JSON and nothing else
    assert out["mode"] == "cross-modal" and out["queries"] == [{"modality": "text", "value": "a red thing number 0"}]
    assert list(out["by_modality"]) == ["image", "audio", "points", "video"]  # every modality but the query's
    assert all(len(v) == 2 for v in out["by_modality"].values())
    assert {h["modality"] for h in out["hits"]} == {"image", "audio", "points", "video"}
    assert "other than the query's own (text)" in out["note"] and out["note"] in proc.stderr
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.width == 2 * 160 and sheet.height > 4 * 160  # one block of rows per modality


def test_target_still_chooses_and_all_ranks_everything(indexed):
    proc = search_cli("--index", str(indexed / "index"), "-q", "text:a red thing number 0", "-k", "3",
                      "--target", "image")
    out = json.loads(proc.stdout)
    assert out["mode"] == "targets" and [h["modality"] for h in out["hits"]] == ["image"] * 3
    proc = search_cli("--index", str(indexed / "index"), "-q", "a red thing number 0", "-k", "1", "--target", "all")
    out = json.loads(proc.stdout)
    assert out["mode"] == "all" and out["hits"][0]["modality"] == "text"  # its own caption ranks first
    assert out["hits"][0]["id"] == "red-0" and out["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_file_query_excludes_its_own_modality(indexed):
    image = indexed / "img" / "blue-1.png"
    proc = search_cli("--index", str(indexed / "index"), "-q", str(image), "-k", "1")
    out = json.loads(proc.stdout)
    assert out["queries"][0]["modality"] == "image" and "image" not in out["by_modality"]
    assert sorted(out["by_modality"]) == ["audio", "points", "text", "video"]


def test_tiles_draw_audio_points_and_video(tmp_path):
    wav = write_wav(tmp_path / "tone.wav", 880, seconds=1.0)
    spec = np.asarray(audio_thumbnail(str(wav), 96), dtype=float)
    assert spec.shape == (96, 96, 3) and spec.std() > 10  # a coloured spectrogram, not a blank card
    rows = spec[2:-2, 2:-2].mean(axis=(1, 2))  # inside the white margin
    assert 10 < rows.argmax() < 80  # the 880 Hz band: a bright row, neither the top nor the bottom one
    cloud = tmp_path / "ring.npy"
    t = np.linspace(0, 2 * np.pi, 400)
    np.save(cloud, np.stack([np.cos(t), np.sin(t), 0.1 * np.sin(3 * t)], 1).astype(np.float32))
    pts = np.asarray(points_thumbnail(str(cloud), 96).convert("L"), dtype=float)
    dark = pts < 200
    assert 100 < dark.sum() < 0.5 * dark.size  # dots drawn, mostly background
    assert not dark[40:56, 40:56].any()  # a ring: its centre stays empty
    video = write_video(tmp_path / "v.mp4", 40, frames=9)
    strip = np.asarray(video_thumbnail(str(video), 96).convert("L"), dtype=float)
    slot = (96 - 4) // 3
    means = [strip[2 + k * slot + slot // 2 - 2: 2 + k * slot + slot // 2 + 2, 40:56].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]  # three frames in time order (the test video brightens)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    card = tile_image(Hit(0, 0.5, "broken.wav", "audio", str(broken)), 96)
    assert np.asarray(card).std() > 5  # a card saying why, instead of a crash


def test_names_are_short_wrapped_and_stay_inside_their_tiles(tmp_path):
    from PIL import ImageFont

    measure = ImageFont.load_default().getlength
    long = "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy_and_more_words.ogg"
    lines = fit_lines(long, 152, 2, measure)
    assert len(lines) == 2 and all(measure(ln) <= 152 for ln in lines)
    assert lines[0].startswith("Kevin_") and lines[-1].endswith(".ogg") and "..." in "".join(lines)
    assert fit_lines("short.wav", 152, 2, measure) == ["short.wav"]
    folder = tmp_path / ("a_very_long_folder_name_" * 4)
    folder.mkdir()
    wav = write_wav(folder / (long.removesuffix(".ogg") + ".wav"), 440)
    hits = [Hit(i, 0.9 - i / 10, f"h{i}", "audio", str(wav)) for i in range(2)]
    path = contact_sheet(hits, tmp_path / "s.png", tile=160, columns=2)
    arr = np.asarray(Image.open(path).convert("L"))
    caption = arr[160:, :]  # below the tiles: rank, score and the name
    assert (caption[:, 156:164] > 250).all()  # nothing crosses from the first tile's caption into the second
    assert (caption[:, 4:150] < 128).any()  # but the caption is there
