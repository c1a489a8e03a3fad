"""Third-party plugins: a separate distribution adds a modality and an encoder without touching anybind/ or encoders/.

``tests/plugin_pkg`` is that distribution (``anybind_plugin_demo``, with its pyproject and a hand-written
``.dist-info`` whose entry_points.txt advertises it under ``anybind.encoders``, and its config tree under
``anybind.configs``). Each test runs a fresh Python process with the folder on ``PYTHONPATH``: plugin discovery runs
once per process, and this process stays clean.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_pkg"
REPO = Path(__file__).resolve().parents[1]


def env_with(*paths: Path) -> dict:
    """The environment of a child process with ``paths`` (and this checkout) first on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_python(code: str, *paths: Path, cwd: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter with ``paths`` first on PYTHONPATH; it prints one JSON line last."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=env_with(*paths), cwd=cwd or REPO, timeout=300)
    assert out.returncode == 0, f"subprocess failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_distribution(root: Path, name: str, entry_points: str, files: dict[str, str] | None = None) -> Path:
    """A hand-written installed distribution under ``root``: its ``files`` and a dist-info advertising
    ``entry_points`` (the text of an entry_points.txt). ``root`` then goes on PYTHONPATH."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


def write_series(path: Path, rows: int, phase: float) -> Path:
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
    make_distribution(tmp_path, "anybind_broken_demo", "[anybind.encoders]\nbroken = anybind_no_such_module\n")
    result = run_python(
        """
        import json, anybind
        names = anybind.list_encoders()
        print(json.dumps({"errors": anybind.plugin_errors(), "names": names}))
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
    make_distribution(tmp_path, "my_encoders", "[anybind.encoders]\nmy_encoders = my_encoders\n",
                      {"my_encoders/__init__.py": _docs_example()})
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


def make_image_series_manifest(root: Path, n: int = 12) -> Path:
    """``n`` samples of three classes, each an image and a series that agree (a grey level, a frequency)."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        k = i % 3
        Image.fromarray(np.full((24, 24, 3), 50 + 70 * k, np.uint8)).save(root / f"{i}.png")
        steps = [f"{math.sin(t * (k + 1) / 3):.4f},{math.cos(t / (k + 2)):.4f}" for t in range(20)]
        (root / f"{i}.csv").write_text("a,b\n" + "\n".join(steps) + "\n")
        rows.append({"id": f"s{i}", "label": str(k), "image": f"{i}.png", "timeseries": f"{i}.csv",
                     "split": "val" if i % 4 == 3 else "train"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


def test_plugin_modality_trains_from_the_cli(tmp_path):
    """``anybind-train modality=[image,timeseries]``: the plugin's conf/modality/timeseries.yaml is found through its
    ``anybind.configs`` entry point (no hydra.searchpath) and its tower trains and is saved."""
    manifest = make_image_series_manifest(tmp_path / "data")
    exe = Path(sys.executable).with_name("anybind-train")
    cmd = [str(exe), "debug=smoke", f"data.manifest={manifest}", "modality=[image,timeseries]", "eval.enabled=false",
           "trainer.tensorboard=false", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_with(PLUGIN_DIR), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["step"] == 4 and math.isfinite(metrics["train"]["loss/image-timeseries"])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "checkpoints" / "last.safetensors"), "pt") as f:
        towers = {k.split(".")[1] for k in f.keys() if k.startswith("encoders.")}
    assert towers == {"image", "timeseries"}
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert saved["config"]["modality"]["timeseries"]["encoder"] == "timeseries_mlp_test"


def test_a_registered_modality_without_a_yaml_trains_with_a_plus_override(tmp_path):
    """A plugin that ships no config tree: ``+modality.timeseries.encoder=<name>`` adds the tower (the schema fills
    kwargs, tune and augment); ``modality=[image,timeseries]`` has no file to select, and says so."""
    root = tmp_path / "site"
    shutil.copytree(PLUGIN_DIR / "anybind_plugin_demo", root / "anybind_plugin_demo",
                    ignore=shutil.ignore_patterns("conf", "__pycache__"))
    make_distribution(root, "anybind_plugin_noconf", "[anybind.encoders]\ntimeseries = anybind_plugin_demo\n")
    manifest = make_image_series_manifest(tmp_path / "data", n=8)
    result = run_python(
        f"""
        import json
        from omegaconf import OmegaConf
        from hydra.errors import MissingConfigException
        from anybind.train.recipe import build_run, compose_train_config
        base = ["debug=smoke", "data.manifest={manifest}", "modality=[image]"]
        cfg = compose_train_config(base + ["+modality.timeseries.encoder=timeseries_mlp_test",
                                           "+modality.timeseries.tune.lr_scale=0.5"])
        setup = build_run(cfg)
        out = {{"node": OmegaConf.to_container(cfg.modality.timeseries), "towers": sorted(setup.model.encoders)}}
        try:
            compose_train_config(["debug=smoke", "modality=[image,timeseries]"])
        except MissingConfigException as exc:
            out["missing"] = str(exc).splitlines()[0]
        try:
            compose_train_config(base + ["+modality.timeseries.encodr=timeseries_mlp_test"])
        except ValueError as exc:
            out["misspelled"] = str(exc)
        print(json.dumps(out))
        """,
        root,
    )
    assert result["towers"] == ["image", "timeseries"]
    assert result["node"]["encoder"] == "timeseries_mlp_test" and result["node"]["tune"]["lr_scale"] == 0.5
    assert result["node"]["tune"]["mode"] == "full" and result["node"]["augment"] == {}
    assert "modality/timeseries" in result["missing"]
    assert "modality.timeseries.encodr" in result["misspelled"]


def test_a_plugin_config_that_shadows_another_is_an_error(tmp_path):
    root = make_distribution(tmp_path / "site", "anybind_shadow_demo", "[anybind.configs]\nshadow = shadow_conf\n",
                             {"shadow_conf/__init__.py": "", "shadow_conf/modality/image.yaml": "encoder: x\n"})
    result = run_python(
        """
        import json
        from anybind.registry import PluginConflictError
        from anybind.train.recipe import compose_train_config
        try:
            compose_train_config(["modality=[image]"])
        except PluginConflictError as exc:
            print(json.dumps({"error": str(exc)}))
        """,
        root,
    )
    assert "'modality/image.yaml' is already provided by anybind's own configs" in result["error"]
    assert "anybind.configs:shadow = shadow_conf (anybind-shadow-demo 0.1)" in result["error"]


@pytest.mark.parametrize("code,what", [
    ("anybind.register_encoder('image_vit_tiny', modality='image')(lambda **kw: None)",
     "encoder 'image_vit_tiny' is already registered by encoders.image.image_vit_tiny [built-in entry point "
     "anybind.encoders:builtin"),
    ("anybind.register_modality('image', reader=str, transform=str)",
     "modality 'image' is already registered by anybind (built-in)"),
    ("anybind.register_modality('scan', reader=str, transform=str, extensions=('.PNG',))",
     "file extension '.png' is already registered by anybind (built-in) (modality 'image')"),
    ("anybind.register_encoder('timeseries_mlp_test', modality='timeseries')(lambda **kw: None)",
     "encoder 'timeseries_mlp_test' is already registered by anybind_plugin_demo.timeseries_mlp_test [plugin entry "
     "point anybind.encoders:timeseries = anybind_plugin_demo (anybind-plugin-demo 0.1)]"),
])
def test_a_plugin_claiming_a_taken_name_or_extension_fails_naming_both(tmp_path, code, what):
    """The conflict is an error on every use of the registry (not a warning and a plugin that silently vanishes);
    it names the existing owner and the plugin entry point that claims the name again."""
    # zz_taker loads after the demo plugin (entry points load in name order, the built-ins first)
    root = make_distribution(tmp_path / "site", "anybind_taker_demo", "[anybind.encoders]\nzz_taker = taker_demo\n",
                             {"taker_demo/__init__.py": f"import anybind\n{code}\n"})
    result = run_python(
        """
        import json, anybind
        from anybind.registry import PluginConflictError
        errors = []
        for use in (anybind.list_encoders, anybind.list_modalities, lambda: anybind.create_encoder("image_vit_test")):
            try:
                use()
            except PluginConflictError as exc:
                errors.append(str(exc))
        print(json.dumps({"errors": errors}))
        """,
        root, PLUGIN_DIR,
    )
    assert len(result["errors"]) == 3 and len(set(result["errors"])) == 1
    error = result["errors"][0]
    assert error.startswith("anybind plugin conflict: ") and what in error, error
    new = "[plugin entry point anybind.encoders:zz_taker = taker_demo (anybind-taker-demo 0.1)]"
    assert re.search(r"taker_demo\S* " + re.escape(new), error), error


def test_missing_builtin_entry_point_is_an_error_that_says_how_to_install():
    """Without anybind's install metadata (no ``builtin`` entry point) the registry says so: it never imports the
    built-in encoders by name."""
    result = run_python(
        """
        import importlib.metadata as md, json, sys
        real = md.entry_points
        md.entry_points = lambda **kw: [ep for ep in real(**kw) if ep.name != "builtin"]
        import anybind
        try:
            anybind.list_encoders()
        except anybind.RegistryError as exc:
            print(json.dumps({"error": str(exc), "imported": "encoders" in sys.modules}))
        """
    )
    assert "the built-in encoders are not installed" in result["error"] and "pip install -e ." in result["error"]
    assert not result["imported"]



def _docs_plugin(root: Path) -> tuple[Path, dict]:
    """The "A complete plugin" of docs/plugins.md, installed under ``root``: each code block with a ``# <path>``
    comment in its first two lines is that file of the project; its pyproject's entry points go into the
    hand-written dist-info."""
    import tomllib

    section = (REPO / "docs" / "plugins.md").read_text().split("## A complete plugin", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in section.split("```")[1::2]:
        lang, _, body = block.partition("\n")
        names = [line[2:].split()[0] for line in body.split("\n")[:2] if line.startswith("# ") and line[2:].strip()]
        path = next((n for n in names if n.endswith((".py", ".yaml", ".toml"))), None)
        if lang in ("python", "yaml", "toml") and path:
            files[path] = body
    project = tomllib.loads(files.pop("pyproject.toml"))["project"]
    entry_points = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                           for group, eps in project["entry-points"].items())
    package = project["entry-points"]["anybind.encoders"]
    files[f"{package}/conf/__init__.py"] = ""
    return make_distribution(root, project["name"].replace("-", "_"), entry_points, files), project


def test_docs_plugin_trains_from_the_cli_and_embeds(tmp_path):
    """docs/plugins.md's plugin, as written there: anybind-train modality=[image,spectrum] trains it, the docs'
    +modality.spectrum form composes, model.embed reads .spec files and names a bad one."""
    root, project = _docs_plugin(tmp_path / "site")
    assert project["entry-points"]["anybind.configs"] == {"my_spectra": "my_spectra.conf"}
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(12):
        k = i % 3
        (data / f"{i}.spec").write_text("\n".join(f"{math.exp(-((t - 10 * k - 5) / 4) ** 2):.4f}" for t in range(40)))
        rows.append({"id": f"s{i}", "image": f"{i}.png", "spectrum": f"{i}.spec", "split": "train"})
    make_image_series_manifest(data, n=12)  # the images
    (data / "spectra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exe = Path(sys.executable).with_name("anybind-train")
    cmd = [str(exe), "debug=smoke", f"data.manifest={data / 'spectra.jsonl'}", "modality=[image,spectrum]",
           "eval.enabled=false", "trainer.max_steps=2", "trainer.tensorboard=false", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_with(root), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert saved["config"]["modality"]["spectrum"]["encoder"] == "spectrum_transformer_test"
    assert math.isfinite(json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["loss"])
    (data / "bad.spec").write_text("1\n2\nthree\n")
    result = run_python(
        f"""
        import json, anybind
        from anybind.train.recipe import build_model, compose_train_config
        model = anybind.create_model({{"image": "image_vit_test", "spectrum": "spectrum_transformer_test"}})
        emb = model.embed({{"spectrum": ["{data / '0.spec'}", "{data / '1.spec'}"]}})["spectrum"]
        try:
            model.embed({{"spectrum": ["{data / 'bad.spec'}"]}})
        except anybind.InputError as err:
            problem = err.problem
        plus = compose_train_config(["model_size=test", "modality=[image]",  # the docs' +modality form
                                     "+modality.spectrum.encoder=spectrum_transformer_test",
                                     "+modality.spectrum.kwargs.bins=128"])
        print(json.dumps({{"shape": list(emb.shape), "default": anybind.get_modality("spectrum").default_encoder,
                          "problem": problem, "inferred": anybind.modality_for_path("x.SPEC"),
                          "bins": build_model(plus).encoders["spectrum"].input_contract["bins"]}}))
        """,
        root,
    )
    assert result == {"shape": [2, 32], "default": "spectrum_transformer_tiny", "inferred": "spectrum", "bins": 128,
                      "problem": result["problem"]} and "not a list of numbers" in result["problem"]
