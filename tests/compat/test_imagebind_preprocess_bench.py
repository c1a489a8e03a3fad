"""anybind.bench.imagebind_preprocess: the harness that times ImageBind's data.py against anybind's ImageBind-parity
preprocessing. A stand-in source tree plays ImageBind's part (its ``load_and_transform_*`` functions call anybind's,
one file at a time); what is checked is the harness: fresh processes for both sides, medians and ratios, the parity
fields per kind of output, and the clip sampler ImageBind's pinned pytorchvideo uses."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import soundfile as sf
import torch

from anybind.bench import imagebind_preprocess as B
from anybind.compat.preprocess import clip_windows

STAND_IN = '''
from anybind.compat.loading import load_and_transform


def load_and_transform_vision_data(paths, device):
    return load_and_transform("image", paths, workers=1)


def load_and_transform_audio_data(paths, device):
    return load_and_transform("audio", paths, workers=1)


def load_and_transform_text(texts, device):
    return load_and_transform("text", texts)
'''


@pytest.fixture
def work(tmp_path):
    from PIL import Image

    src = tmp_path / "src" / "imagebind"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "data.py").write_text(STAND_IN)
    g = torch.Generator().manual_seed(0)
    images, sounds = [], []
    for i in range(3):
        Image.fromarray((torch.rand(120, 160, 3, generator=g) * 255).to(torch.uint8).numpy()).save(tmp_path / f"{i}.jpg")
        sf.write(tmp_path / f"{i}.wav", (torch.randn(6000 + 2000 * i, generator=g) * 0.1).numpy(), 8000)
        images.append(str(tmp_path / f"{i}.jpg"))
        sounds.append(str(tmp_path / f"{i}.wav"))
    inputs = {"audio": sounds, "image": images, "text": ["a dog on a beach.", "Two cats & a hat"], "video": []}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    return tmp_path


def test_compare_times_both_sides_and_checks_parity_by_kind(work):
    lines = []
    rows = B.compare(work / "src", work, ["audio", "image", "text"], rounds=2, log=lines.append)
    assert [r["modality"] for r in rows] == ["audio", "image", "text"] and len(lines) == 3
    for r in rows:
        assert len(r["imagebind_runs"]) == len(r["anybind_runs"]) == 2
        assert r["imagebind_s"] > 0 and r["anybind_s"] > 0
        assert r["speedup"] == pytest.approx(r["imagebind_s"] / r["anybind_s"], rel=1e-2)
    audio, image, text = rows
    assert audio["items"] == 3 and audio["exact"] and audio["max_abs_err"] == 0  # one code path on both sides
    assert image["exact"] and text == {**text, "token_exact": True, "mismatched": 0}
    assert audio["imagebind_audio_decoder"] in ("soundfile", "torchaudio")


def test_a_tree_without_data_py_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no imagebind/data.py there"):
        B.main(["--imagebind-src", str(tmp_path), "--tmp", str(tmp_path / "w")])


@pytest.mark.parametrize("duration", [0.4, 2.0, 3.0, 7.3, 30.0])
@pytest.mark.parametrize("clips", [1, 3, 5])
def test_the_pinned_sampler_cuts_anybinds_windows(duration, clips):
    s = B.PinnedClipSampler(clip_duration=2, clips_per_video=clips)
    got, last, end = [], False, 0.0
    while not last:
        start, end, _, _, last = s(end, duration, annotation=None)
        got.append((start, end))
    assert got == clip_windows(duration, 2.0, clips)


class _Released:
    """Steps by span / clips, as the released pytorchvideo 0.1.5 does."""

    def __init__(self, clip_duration, clips_per_video):
        self.d, self.n, self.i = Fraction(clip_duration), clips_per_video, 0

    def __call__(self, last, duration, annotation=None):
        step = Fraction(max(Fraction(duration) - self.d, 0)) / self.n
        start, self.i = step * self.i, self.i + 1
        done = self.i >= self.n
        self.i = 0 if done else self.i
        return start, start + self.d, self.i, 0, done


def test_the_released_spacing_is_detected():
    assert B._spaces_by_clip_count(_Released)
    assert not B._spaces_by_clip_count(B.PinnedClipSampler)
