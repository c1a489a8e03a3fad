"""Third-party plugins: a separate distribution adds a modality and an encoder without touching anybind/ or encoders/.

``tests/plugin_pkg`` is that distribution (``anybind_plugin_demo``, with its pyproject and a hand-written
``.dist-info`` whose entry_points.txt advertises it under ``anybind.encoders``). Each test runs a fresh Python
process with the folder on ``PYTHONPATH``: plugin discovery runs once per process, and this process stays clean.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_pkg"
REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *paths: Path, cwd: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter with ``paths`` first on PYTHONPATH; it prints one JSON line last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=cwd or REPO, timeout=300)
    assert out.returncode == 0, f"subprocess failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_series(path: Path, rows: int, phase: float) -> Path:
    import math

    lines = ["x,y"] + [f"{math.sin(i / 3 + phase):.5f},{math.cos(i / 5 - phase):.5f}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plugin_adds_a_modality_and_an_encoder(tmp_path):
    if importlib.util.find_spec("anybind.data.transforms") is None:
        pytest.skip("anybind.data.transforms (text tokenization) is not in this checkout")
    series = [write_series(tmp_path / f"s{i}.csv", rows, phase) for i, (rows, phase) in enumerate([(50, 0.0), (20, 1.3)])]
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n4,oops\n")
    result = run_python(
        f"""
        import json, torch, anybind
        from anybind.registry import get_encoder_entry
        out = {{"modalities": anybind.list_modalities(),
               "encoders": anybind.list_encoders(modality="timeseries"),
               "module": get_encoder_entry("timeseries_mlp_test").module,
               "csv": anybind.modality_for_path("x.csv")}}
        model = anybind.create_model({{"timeseries": "timeseries_mlp_test", "text": "text_transformer_test"}})
        series = {[str(p) for p in series]!r}
        emb = model.embed({{"timeseries": series, "text": ["hello"]}})
        one = model.embed({{"timeseries": series[1:]}})["timeseries"]
        out["shapes"] = {{k: list(v.shape) for k, v in emb.items()}}
        out["norms"] = {{k: v.norm(dim=-1).tolist() for k, v in emb.items()}}
        out["order_kept"] = torch.allclose(one[0], emb["timeseries"][1], atol=1e-6)
        out["distinct"] = not torch.allclose(emb["timeseries"][0], emb["timeseries"][1], atol=1e-4)
        path = anybind.save_model("{tmp_path / 'ckpt' / 'model'}", model)
        again = anybind.load(path, modalities=["timeseries"]).embed({{"timeseries": series}})["timeseries"]
        out["reloaded_equal"] = torch.allclose(again, emb["timeseries"], atol=1e-6)
        try:
            model.embed({{"timeseries": ["{tmp_path / 'bad.csv'}"]}})
        except anybind.InputError as err:
            out["error"] = [err.source, err.modality, err.problem]
        print(json.dumps(out))
        """,
        PLUGIN_DIR,
    )
    assert "timeseries" in result["modalities"] and {"image", "text", "audio"} <= set(result["modalities"])
    assert result["encoders"] == ["timeseries_mlp_test", "timeseries_mlp_tiny"]
    assert result["module"] == "anybind_plugin_demo" and result["csv"] == "timeseries"
    assert result["shapes"] == {"timeseries": [2, 32], "text": [1, 32]}
    for norms in result["norms"].values():
        assert all(abs(n - 1) < 1e-5 for n in norms)
    assert result["order_kept"] and result["distinct"] and result["reloaded_equal"]
    source, modality, problem = result["error"]
    assert source.endswith("bad.csv") and modality == "timeseries" and "oops" in problem


def test_plugin_is_invisible_without_its_distribution():
    result = run_python(
        """
        import json, anybind
        print(json.dumps({"modalities": anybind.list_modalities(), "encoders": anybind.list_encoders("timeseries_*")}))
        """
    )
    assert "timeseries" not in result["modalities"] and result["encoders"] == []


def test_a_broken_plugin_is_reported_and_does_not_hide_the_others(tmp_path):
    dist = tmp_path / "anybind_broken_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: anybind-broken-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[anybind.encoders]\nbroken = anybind_no_such_module\n")
    result = run_python(
        """
        import json, anybind
        from anybind.registry import load_plugins
        names = anybind.list_encoders()
        print(json.dumps({"errors": load_plugins(), "names": names}))
        """,
        tmp_path, PLUGIN_DIR,
    )
    assert "broken" in result["errors"] and "anybind_no_such_module" in result["errors"]["broken"]
    assert "image_vit_tiny" in result["names"] and "timeseries_mlp_test" in result["names"]


def _docs_example() -> str:
    text = (REPO / "docs" / "encoders.md").read_text()
    section = text.split("## Add an encoder in 20 lines", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_example_registers_and_runs(tmp_path):
    """The "Add an encoder in 20 lines" example of docs/encoders.md, as a user's package, through its entry point."""
    pkg = tmp_path / "my_encoders"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(_docs_example())
    dist = tmp_path / "my_encoders-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-encoders\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[anybind.encoders]\nmy_encoders = my_encoders\n")
    result = run_python(
        """
        import json, torch, anybind
        from anybind.registry import get_encoder_entry
        model = anybind.create_model({"image": "image_convvit_small", "text": "text_transformer_test"}, embed_dim=64)
        enc = model.encoders["image"]
        size = enc.input_contract["image_size"]
        z = model({"image": torch.randn(3, 3, size, size)})["image"]
        print(json.dumps({"module": get_encoder_entry("image_convvit_small").module, "shape": list(z.shape),
                          "norms": z.norm(dim=-1).tolist()}))
        """,
        tmp_path,
    )
    assert result["module"] == "my_encoders" and result["shape"] == [3, 64]
    assert all(abs(n - 1) < 1e-5 for n in result["norms"])
