"""Digits data preparation: FSDD + MNIST from ../shared/data into image-text and audio-image manifests."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anybind.data.digits import (CAPTION_TEMPLATES, DIGIT_WORDS, Recording, caption, class_prompts, fsdd_split,
                                 list_fsdd, load_mnist, main, mnist_split, prepare_digits, read_idx)
from anybind.data.manifest import load_manifest
from anybind.errors import InputError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data from the repo root
FSDD, MNIST = SHARED / "fsdd" / "recordings", SHARED / "mnist"
needs_data = pytest.mark.skipif(not (FSDD.is_dir() and MNIST.is_dir()), reason="../shared/data (FSDD, MNIST) missing")


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def mnist_index(image_path: str) -> int:
    return int(Path(image_path).stem)


def test_captions_and_prompts():
    assert caption("a handwritten {word}", 7) == "a handwritten seven"
    assert caption("the digit {numeral}", 7) == "the digit 7"
    prompts = class_prompts(3)
    assert len(prompts) == len(CAPTION_TEMPLATES) == len(set(prompts))
    assert "three" in prompts[0] or "3" in prompts[0]
    assert all(("three" in p) != ("3" in p) for p in prompts)  # each caption names the digit exactly one way


def test_fsdd_split_rules():
    rec = lambda speaker, take: Recording(Path(f"/x/3_{speaker}_{take}.wav"), 3, speaker, take)  # noqa: E731
    assert [fsdd_split(rec("theo", t), ("george",)) for t in (0, 4, 5, 49)] == ["test", "test", "train", "train"]
    assert {fsdd_split(rec("george", t), ("george",)) for t in (0, 4, 5, 49)} == {"heldout"}
    assert fsdd_split(rec("george", 7), ()) == "train"


def test_mnist_split_is_seeded_and_per_class():
    labels = np.repeat(np.arange(10), 50)
    a, b = mnist_split(labels, 0.2, seed=1), mnist_split(labels, 0.2, seed=1)
    assert (a == b).all() and (a != mnist_split(labels, 0.2, seed=2)).any()
    for d in range(10):
        assert (a[labels == d] == "test").sum() == 10
    with pytest.raises(ValueError, match="test_fraction"):
        mnist_split(labels, 1.0, 0)


def test_read_idx_checks_the_header(tmp_path):
    good = tmp_path / "labels-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert read_idx(good).tolist() == [1, 2, 3]
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes([1, 2]))
    with pytest.raises(InputError, match="5 bytes of data, the file holds 2"):
        read_idx(short)
    wrong = tmp_path / "wrong-idx"
    wrong.write_bytes(b"\x00\x00\x0d\x03" + bytes(12))
    with pytest.raises(InputError, match="magic"):
        read_idx(wrong)
    with pytest.raises(InputError, match="does not exist"):
        read_idx(tmp_path / "missing.gz")


def test_list_fsdd_rejects_unknown_names(tmp_path):
    (tmp_path / "7_theo_3.wav").write_bytes(b"")
    assert [(r.digit, r.speaker, r.take) for r in list_fsdd(tmp_path)] == [(7, "theo", 3)]
    (tmp_path / "hello.wav").write_bytes(b"")
    with pytest.raises(InputError, match="digit.*speaker.*take"):
        list_fsdd(tmp_path)


@needs_data
def test_full_fsdd_split_counts():
    recs = list_fsdd(FSDD)
    splits = [fsdd_split(r, ("george",)) for r in recs]
    assert len(recs) == 3000
    assert {s: splits.count(s) for s in set(splits)} == {"train": 2250, "test": 250, "heldout": 500}
    images, labels = load_mnist(MNIST)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,) and set(labels.tolist()) == set(range(10))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not (FSDD.is_dir() and MNIST.is_dir()):
        pytest.skip("../shared/data (FSDD, MNIST) missing")
    out = tmp_path_factory.mktemp("digits")
    info = prepare_digits(FSDD, MNIST, out, heldout_speakers=("george",), speakers=("george", "jackson", "theo"),
                          max_take=8, images_per_class=20, images_per_recording=3, captions_per_image=2)
    _, labels = load_mnist(MNIST)
    return info, labels


def test_audio_splits_follow_takes_and_held_out_speaker(small):
    info, _ = small
    ai = rows(info.manifests["audio_image"])
    assert {r["split"] for r in ai} == {"train", "test", "heldout"}
    for r in ai:
        name = Path(r["audio"]).stem
        digit, speaker, take = name.split("_")
        assert (r["speaker"], r["take"], r["label"]) == (speaker, int(take), DIGIT_WORDS[int(digit)])
        want = "heldout" if speaker == "george" else ("test" if int(take) < 5 else "train")
        assert r["split"] == want, r
    train_speakers = {r["speaker"] for r in ai if r["split"] == "train"}
    assert train_speakers == {"jackson", "theo"}  # the held-out speaker never trains
    assert info.counts["recordings"] == {"train": 60, "test": 100, "heldout": 80}


def test_audio_meets_images_of_its_digit_from_the_right_split(small):
    info, labels = small
    it = rows(info.manifests["image_text"])
    image_split = {mnist_index(r["image"]): r["split"] for r in it}
    per_recording: dict[str, list[int]] = {}
    for r in rows(info.manifests["audio_image"]):
        i = mnist_index(r["image"])
        assert DIGIT_WORDS[labels[i]] == r["label"]
        assert image_split[i] == ("train" if r["split"] == "train" else "test")
        per_recording.setdefault(r["audio"] + r["split"], []).append(i)
    for key, imgs in per_recording.items():
        assert len(imgs) == len(set(imgs)) == (3 if key.endswith("train") else 1)


def test_no_audio_text_pair_anywhere_in_training(small):
    info, _ = small
    ai = rows(info.manifests["audio_image"])
    assert ai and all("text" not in r and {"audio", "image"} <= set(r) for r in ai)
    for name, path in info.manifests.items():
        for r in rows(path):
            assert not ("audio" in r and "text" in r), (name, r)  # evaluation rows hold one modality each
    man = load_manifest(info.manifests["audio_image"])
    assert man.modalities() == ["audio", "image"]


def test_image_text_captions_name_the_right_digit(small):
    info, labels = small
    it = rows(info.manifests["image_text"])
    all_captions = {d: set(class_prompts(d)) for d in range(10)}
    seen_templates = set()
    for r in it:
        d = int(labels[mnist_index(r["image"])])
        assert r["label"] == DIGIT_WORDS[d] and r["text"] in all_captions[d], r
        seen_templates.add(next(t for t in CAPTION_TEMPLATES if caption(t, d) == r["text"]))
    assert len(seen_templates) >= 6  # templates vary across rows
    per_image: dict[str, list[str]] = {}
    for r in it:
        per_image.setdefault(r["image"] + r["split"], []).append(r["text"])
    for key, caps in per_image.items():
        assert len(caps) == len(set(caps)) == (2 if key.endswith("train") else 1)
    train = {r["image"] for r in it if r["split"] == "train"}
    test = {r["image"] for r in it if r["split"] == "test"}
    assert train and test and not train & test
    assert info.counts["mnist_images"] == {"train": 160, "test": 40}


def test_pngs_hold_the_mnist_pixels(small):
    info, _ = small
    images, _ = load_mnist(MNIST)
    r = rows(info.manifests["image_text"])[5]
    png = np.asarray(Image.open(info.root / r["image"]))
    assert png.shape == (28, 28) and (png == images[mnist_index(r["image"])]).all()


def test_eval_manifests(small):
    info, _ = small
    test = load_manifest(info.manifests["eval_test"])
    held = load_manifest(info.manifests["eval_heldout"])
    audio_test = [s for s in test if "audio" in s.items]
    audio_held = [s for s in held if "audio" in s.items]
    assert len(audio_test) == 100 and all(s.extra["take"] < 5 and s.extra["speaker"] != "george" for s in audio_test)
    assert len(audio_held) == 80 and {s.extra["speaker"] for s in audio_held} == {"george"}
    texts = [s for s in test if "text" in s.items]
    assert len(texts) == 10 * len(CAPTION_TEMPLATES) and all(s.label is not None for s in test)
    assert sum("image" in s.items for s in test) == 40


def test_cli_writes_manifests_and_rejects_unknown_speaker(tmp_path, capsys):
    if not (FSDD.is_dir() and MNIST.is_dir()):
        pytest.skip("../shared/data (FSDD, MNIST) missing")
    out = tmp_path / "d"
    main(["--fsdd", str(FSDD), "--mnist", str(MNIST), "--out", str(out), "--speakers", "jackson", "--max-take", "6",
          "--images-per-class", "5", "--heldout-speakers"])
    info = json.loads((out / "digits.json").read_text())
    assert info["counts"]["recordings"] == {"train": 10, "test": 50, "heldout": 0}
    assert (out / "audio_image.jsonl").is_file() and "digits data in" in capsys.readouterr().out
    with pytest.raises(ValueError, match="held-out speakers"):
        prepare_digits(FSDD, MNIST, tmp_path / "e", speakers=("jackson",), heldout_speakers=("nobody",),
                       images_per_class=5, max_take=6)
