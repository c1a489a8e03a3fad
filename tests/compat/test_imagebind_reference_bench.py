"""tools/bench_imagebind.py --imagebind-src: the harness that times ImageBind's own code against anybind on one set
of weights. No ImageBind source exists offline, so a stand-in tree plays ImageBind's part: its
``imagebind_huge(pretrained=False)`` serves the tiny parity fixture (ImageBind-keyed weights) through anybind's
towers, with ImageBind's call convention (a dict of inputs in, a dict of embeddings out) and its attention layers'
head counts. What is checked is the harness: the weights written once and read by both sides, interleaved fresh
processes, the ratio of the medians, the parity of the outputs, and a clear error without a source tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anybind.bench.imagebind_ref import compare, import_imagebind

from imagebind_fixture import FIXTURE, TINY_HEADS

STAND_IN = '''
import torch
from torch import nn

from anybind.compat.imagebind import load_imagebind

WEIGHTS = {weights!r}
HEADS = {heads!r}
NAMES = {{"vision": "image"}}


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self._sd = torch.load(WEIGHTS, weights_only=True)
        self.modality_trunks = nn.ModuleDict({{k: nn.Sequential(nn.MultiheadAttention(8 * h, h))
                                               for k, h in HEADS.items()}})
        self._model = None

    def state_dict(self, *args, **kwargs):
        return dict(self._sd)

    def load_state_dict(self, sd, strict=True):
        self._model = load_imagebind(dict(sd), num_heads=HEADS, mmap=False).eval()

    def forward(self, inputs):
        return {{k: self._model.encoders[NAMES.get(k, k)](x) for k, x in inputs.items()}}


def imagebind_huge(pretrained=False):
    assert pretrained is False
    return StandIn()
'''


@pytest.fixture
def source_tree(tmp_path):
    if not (FIXTURE / "weights.pt").exists():
        pytest.skip(f"ImageBind fixture missing at {FIXTURE}")
    models = tmp_path / "src" / "imagebind" / "models"
    models.mkdir(parents=True)
    (models.parent / "__init__.py").write_text("")
    (models / "__init__.py").write_text("")
    (models / "imagebind_model.py").write_text(STAND_IN.format(weights=str(FIXTURE / "weights.pt"), heads=TINY_HEADS))
    return tmp_path / "src"


def test_compare_times_both_sides_on_one_set_of_weights(source_tree, tmp_path):
    lines = []
    rows = compare(source_tree, tmp_path / "work", ["image", "text", "points"], [2], rounds=2, repeats=1,
                   log=lines.append)
    assert [(r["modality"], r["batch"]) for r in rows] == [("image", 2), ("text", 2)]
    for r in rows:
        assert len(r["imagebind_runs"]) == len(r["anybind_runs"]) == 2 and r["imagebind_s"] > 0 and r["anybind_s"] > 0
        assert r["speedup"] == pytest.approx(r["imagebind_s"] / r["anybind_s"], rel=1e-2)
        assert r["max_abs_err"] < 1e-5 and r["min_cosine"] > 0.99999  # both sides ran the same weights on one input
    assert json.loads(lines[0])["heads"] == {k: v for k, v in TINY_HEADS.items()}  # read from the attention layers
    assert any("skipping points" in line for line in lines)
    assert not list((tmp_path / "work").glob("*.pt*"))  # the weights and outputs are removed


def test_a_folder_without_imagebind_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no imagebind/models/imagebind_model.py there"):
        import_imagebind(tmp_path)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "tools" / "bench_imagebind.py"),
                          "--imagebind-src", str(tmp_path), "--skip-load"], capture_output=True, text=True)
    assert out.returncode != 0 and "no imagebind/models/imagebind_model.py there" in out.stderr
