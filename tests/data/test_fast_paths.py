"""The embedding fast paths give the same results as the slow ones: tokenizer ids, trimmed text padding, clips
embedded once, JPEG draft decoding; and the tokenizer is built once per process, shared with forked workers."""

import os
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anybind
from anybind.data.readers import read_image
from anybind.data.transforms import text as text_mod
from anybind.data.transforms.text import get_tokenizer, plain_clean, token_ids
from anybind.model import ItemDataset, reader_options

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a dog", "A Dog  on   the GRASS.", "Caf\u00e9 &amp; cr\u00e8me br\u00fbl\u00e9e", "\u00e2\u20ac\u2122 mojibake",
         " ".join(["long"] * 200), "tabs\tand\nnew lines", "AC/DC &lt;3 &amp;&amp;", "\u4e2d\u6587 and emoji \U0001F600",
         "it's 5 o'clock, isn't it?", "x"]


@pytest.mark.parametrize("context_length", [77, 16])
def test_token_ids_equal_open_clip_tokenizer(context_length):
    import open_clip

    ref = open_clip.get_tokenizer("ViT-B-32")
    rng = random.Random(0)
    fuzz = ["".join(rng.choice(string.printable) for _ in range(rng.randint(1, 80))) for _ in range(300)]
    texts = TEXTS + [t for t in fuzz if t.strip()]
    ours = torch.stack([token_ids(t, context_length) for t in texts])
    assert torch.equal(ours, ref(texts, context_length=context_length))
    assert torch.equal(ours, get_tokenizer()(texts, context_length=context_length))  # the tokenizer object too


def test_plain_clean_is_the_full_cleaning_for_plain_ascii():
    full = get_tokenizer().clean_fn.full
    rng = random.Random(1)
    printable = string.printable[:95]  # letters, digits, punctuation, space
    checked = 0
    for _ in range(3000):
        t = "".join(rng.choice(printable) for _ in range(rng.randint(0, 50)))
        if plain_clean(t) is not None:
            assert plain_clean(t) == full(t), repr(t)
            checked += 1
    assert checked > 2000
    assert plain_clean("a &amp; b") is None and plain_clean("caf\u00e9") is None and plain_clean("a\tb") is None


def test_tokenizer_needs_no_open_clip_package_import():
    code = ("import sys; from anybind.data.transforms.text import token_ids; token_ids('a dog', 77); "
            "print('open_clip' in sys.modules, 'torchvision' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.split() == ["False", "False"], proc.stderr[-2000:]


class _SeesTokenizer(torch.utils.data.Dataset):
    """Reports, from inside a DataLoader worker, whether the tokenizer was already there when the worker started."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.tensor(["clip_bpe" in text_mod._TOKENIZERS, os.getpid()])


def test_the_tokenizer_is_built_in_the_parent_and_shared_with_workers(monkeypatch):
    if torch.multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        pytest.skip("workers are not forked here")
    monkeypatch.setattr(text_mod, "_TOKENIZERS", {})
    ds = ItemDataset("text", ["a dog", "a cat"], {"context_length": 77, "tokenizer": "clip_bpe"})
    assert "clip_bpe" in text_mod._TOKENIZERS  # built when the dataset was, in this process
    loader = torch.utils.data.DataLoader(_SeesTokenizer(ds), batch_size=1, num_workers=1,
                                         multiprocessing_context="fork")
    seen = [b[0] for b in loader]
    assert all(bool(s[0]) for s in seen) and all(int(s[1]) != os.getpid() for s in seen)


def test_text_tower_trimmed_at_end_of_text_gives_the_same_embedding():
    torch.manual_seed(0)
    model = anybind.create_model({"text": "text_transformer_test"})
    tower = model.encoders["text"]
    ids = torch.stack([token_ids(t, 77) for t in ["a dog", "a much longer caption about a red cube on a table", "x"]])
    with torch.no_grad():
        trimmed = tower(ids)
        tower.stem.trim_after_eot = False
        full = tower(ids)
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=0)


def test_equal_clips_are_embedded_once_with_the_same_result():
    torch.manual_seed(0)
    model = anybind.create_model({"audio": {"name": "audio_vit_test", "clips": 3}})
    tower = model.encoders["audio"]
    x = torch.randn(4, 3, 1, 32, 48)
    x[1] = x[1, :1]  # a short recording: its three clips are one
    x[3] = x[3, :1]
    calls = []
    real = tower.forward_features
    tower.forward_features = lambda t: (calls.append(len(t)), real(t))[1]
    with torch.no_grad():
        fast = tower(x)
    full = tower(x)  # with autograd every clip runs
    assert calls == [8, 12]  # 2 samples x 3 clips + 2 x 1, then all 12
    torch.testing.assert_close(fast, full.detach(), atol=1e-6, rtol=0)


def test_short_audio_transform_computes_its_one_window_once():
    from anybind.data.transforms import audio_transform

    tf = audio_transform({"sample_rate": 16000, "num_mel_bins": 32, "target_length": 100, "clip_duration": 1.0,
                          "clips": 3, "mean": -4.268, "std": 9.138})
    t = np.arange(4000) / 16000
    mel = tf((torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32)), 16000))
    assert mel.shape == (3, 1, 32, 100) and torch.equal(mel[0], mel[1]) and torch.equal(mel[0], mel[2])


def test_jpeg_draft_decoding_when_the_transform_shrinks_anyway(tmp_path):
    from anybind.data.transforms import image_transform

    rng = np.random.default_rng(0)
    arr = (rng.random((480, 640, 3)) * 60 + np.linspace(0, 190, 640)[None, :, None]).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "photo.jpg", quality=92)
    Image.fromarray(arr).save(tmp_path / "photo.png")
    assert read_image(tmp_path / "photo.jpg").size == (640, 480)
    assert read_image(tmp_path / "photo.jpg", draft=224).size == (320, 240)  # 1/2 scale: both sides >= 224
    assert read_image(tmp_path / "photo.jpg", draft=100).size == (160, 120)  # 1/4
    assert read_image(tmp_path / "photo.jpg", draft=300).size == (640, 480)  # 1/2 would be too small
    assert read_image(tmp_path / "photo.png", draft=224).size == (640, 480)  # not a JPEG: decoded in full
    contract = {"image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}
    tf = image_transform(contract)
    assert reader_options(tf) == {"draft": 224}
    full = tf(read_image(tmp_path / "photo.jpg"))
    draft = ItemDataset("image", [str(tmp_path / "photo.jpg")], contract)[0][1]
    assert draft.shape == full.shape == (3, 224, 224)
    assert (draft - full).abs().mean() < 0.05  # normalized units: a resampling difference, not another picture


def test_library_preprocessing_decodes_in_full():
    from anybind.data.library_transforms import library_image_transform

    tf = library_image_transform({"compat": "timm", "image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3,
                                  "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"})
    assert reader_options(tf) == {}
