"""anybind-eval: benchmarks from the command line, manifests with a chance column and honest split handling,
an untrained baseline (model.encoders=default), and user errors as one line with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from layouts import COLORS, make_esc50, make_folder, write_png

from anybind.eval.cli import build_model, run_evaluate
from anybind.eval.errors import BenchmarkError, EvaluationError
from anybind.eval.manifest import labels_look_like_classes
from anybind.eval.report import state_dict_sha256

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("anybind-eval")


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from anybind.retrieval.config import register_configs

    register_configs()
    with initialize_config_module(config_module="conf", version_base=None):
        return hydra_compose(config_name="evaluate", overrides=overrides)


def write_manifest(root: Path, split=lambda k: "test", label=lambda c, j: ["red", "green", "blue"][c]) -> Path:
    rows = []
    for c in range(3):
        for j in range(2):
            k = 2 * c + j
            write_png(root / f"{k}.png", COLORS[c], seed=k)
            row = {"id": f"s{k}", "image": f"{k}.png", "text": f"a {['red', 'green', 'blue'][c]} thing {j}",
                   "label": label(c, j)}
            if split(k) is not None:
                row["split"] = split(k)
            rows.append(row)
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TINY = "model.encoders={image:image_vit_test,text:text_transformer_test}"


def run_cli(args, tmp_path, env_extra=None):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env_extra or {})}
    return subprocess.run([str(EXE), *args, f"hydra.run.dir={tmp_path / 'hydra'}", "progress=false", "num_workers=0"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_benchmark_through_the_config_with_an_untrained_default_model(tmp_path, capsys):
    mini = make_esc50(tmp_path / "ESC-50", per_fold=1)
    cfg = compose(["benchmark=esc50", f"benchmark.root={mini.root}", "benchmark.fold=2", "model.encoders=default",
                   "benchmark.templates=['the sound of {}']", "heatmap=false", f"out_dir={tmp_path / 'run'}",
                   "num_workers=0", "progress=false"])
    result = run_evaluate(cfg)
    out = capsys.readouterr().out
    assert "esc50 (classification, audio), fold=[2]: 5 items found" in out and "zero-shot esc50/audio" in out
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["split"] == {"name": "fold", "value": [2]} and saved["items"]["found"] == 5
    assert saved["model"]["trained"] is False and saved["model"]["encoders"]["audio"]["name"] == "audio_vit_tiny"
    assert set(saved["model"]["encoders"]) == {"audio", "text"}  # only the towers the benchmark needs
    assert result["zero_shot"]["esc50/audio"]["chance_top1"] == pytest.approx(1 / 5)
    assert saved["templates"] == ["the sound of {}"] and "figures" in saved and not saved["figures"]


def test_the_seed_fixes_an_untrained_model():
    tiny = {"audio": "audio_vit_test", "text": "text_transformer_test"}
    a, b, c = (build_model({"encoders": tiny, "seed": s}) for s in (0, 0, 1))
    assert state_dict_sha256(a) == state_dict_sha256(b) != state_dict_sha256(c)


def test_main_prints_and_writes_a_benchmark_result(tmp_path, monkeypatch, capsys):
    from anybind.eval.cli import main

    mini = make_folder(tmp_path / "classes", per_class=1)
    monkeypatch.setattr(sys, "argv", ["anybind-eval", "benchmark=folder", f"benchmark.root={mini.root}",
                                      "model.encoders={image:image_vit_test,text:text_transformer_test}",
                                      f"out_dir={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                                      "num_workers=0", "progress=false"])
    main()
    out = capsys.readouterr().out
    assert "folder (classification, image), split=None: 3 items found, 0 missing, 1 extra" in out
    assert f"wrote {tmp_path / 'run' / 'metrics.json'}" in out and (tmp_path / "run" / "confusion.png").is_file()
    monkeypatch.setattr(sys, "argv", ["anybind-eval", "benchmark=modelnet40", f"benchmark.root={tmp_path / 'nope'}",
                                      "model.encoders=default", f"hydra.run.dir={tmp_path / 'hydra2'}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"anybind-eval: error: benchmark modelnet40: {tmp_path / 'nope'} does not exist (add --debug for the traceback)\n"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "benchmark").glob("*.yaml")))
def test_every_benchmark_config_composes(name, tmp_path):
    from anybind.eval.benchmarks import BENCHMARKS

    cfg = compose([f"benchmark={name}", f"benchmark.root={tmp_path}"])
    assert cfg.benchmark.name == name in BENCHMARKS and cfg.benchmark.root == str(tmp_path)
    first = (REPO / "conf" / "benchmark" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith(f"# anybind-eval benchmark={name} benchmark.root=")
    with pytest.raises(Exception, match="flod"):
        compose([f"benchmark={name}", "benchmark.flod=2"])  # a typo fails at compose time


def test_benchmark_errors_name_the_problem(tmp_path):
    with pytest.raises(BenchmarkError, match="meta/esc50.csv not found"):
        run_evaluate(compose(["benchmark=esc50", f"benchmark.root={tmp_path}", "model.encoders=default"]))
    with pytest.raises(BenchmarkError, match="benchmark.root=<path>"):
        run_evaluate(compose(["benchmark=esc50", "model.encoders=default"]))
    with pytest.raises(EvaluationError, match="give model.checkpoint"):
        run_evaluate(compose([f"manifest={write_manifest(tmp_path)}"]))
    with pytest.raises(EvaluationError, match="manifest=<file>, or benchmark=<name>"):
        run_evaluate(compose([]))


def test_manifest_split_actually_used_is_recorded(tmp_path, capsys):
    path = write_manifest(tmp_path / "nosplit", split=lambda k: None)
    m = run_evaluate(compose([f"manifest={path}", TINY, f"out_dir={tmp_path / 'a'}", "num_workers=0", "progress=false"]))
    assert m["eval"]["split"] is None and m["eval"]["split_requested"] == "test"
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["eval"]["split"] is None
    out = capsys.readouterr().out
    assert "chance" in out.splitlines()[0] and "the manifest declares no split" in out
    assert all(r["emergent"] is None for r in m["retrieval"].values())  # nothing was trained
    assert out.splitlines()[1].rstrip().endswith("-")  # the emergent column shows no flag
    mixed = write_manifest(tmp_path / "mixed", split=lambda k: "test" if k < 4 else "train")
    m = run_evaluate(compose([f"manifest={mixed}", TINY, f"out_dir={tmp_path / 'b'}", "num_workers=0", "progress=false"]))
    assert m["eval"]["split"] == "test" and m["eval"]["counts"] == {"image": 4, "text": 4}
    with pytest.raises(EvaluationError, match=r"no sample has split='test'; its splits are 'train' \(4\), 'val' \(2\)"):
        run_evaluate(compose([f"manifest={write_manifest(tmp_path / 'c', split=lambda k: 'val' if k < 2 else 'train')}",
                              TINY]))


def test_zero_shot_only_when_labels_look_like_class_names(tmp_path):
    assert labels_look_like_classes(["dog", "dog", "cat"]) == (True, "")
    assert not labels_look_like_classes(["a", "b", "c"])[0]  # unique: ids
    assert not labels_look_like_classes(["7", "7", "3"])[0]  # numbers
    assert not labels_look_like_classes(["dog", None, "dog"])[0]
    ids = write_manifest(tmp_path / "ids", label=lambda c, j: f"{c}-{j}")
    m = run_evaluate(compose([f"manifest={ids}", TINY, f"out_dir={tmp_path / 'a'}", "num_workers=0", "progress=false"]))
    assert "zero_shot" not in m and m["eval"]["zero_shot"] == "skipped: every label is unique (ids, not classes)"
    m = run_evaluate(compose([f"manifest={ids}", TINY, f"out_dir={tmp_path / 'b'}", "num_workers=0", "progress=false",
                              "zero_shot=true"]))
    assert m["zero_shot"]["manifest/image"]["n"] == 6 and m["eval"]["zero_shot"] == "ran: asked"
    classes = write_manifest(tmp_path / "cls")
    m = run_evaluate(compose([f"manifest={classes}", TINY, f"out_dir={tmp_path / 'c'}", "num_workers=0",
                              "progress=false"]))
    assert m["zero_shot"]["manifest/image"]["chance_top1"] == pytest.approx(1 / 3)


@pytest.mark.skipif(not EXE.exists(), reason="console scripts not installed")
def test_console_script_split_error_is_one_line_with_exit_2(tmp_path):
    path = write_manifest(tmp_path / "m", split=lambda k: "train")
    bad = run_cli([f"manifest={path}", TINY, "split=test"], tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anybind-eval: error: ") and "no sample has split='test'" in lines[0]
    assert "its splits are 'train' (6)" in lines[0] and "Traceback" not in bad.stderr


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from anybind.eval.cli import main

    path = write_manifest(tmp_path / "m", split=lambda k: "train")
    monkeypatch.setenv("ANYBIND_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["anybind-eval", f"manifest={path}", TINY, f"hydra.run.dir={tmp_path / 'h'}"])
    with pytest.raises(SystemExit) as exit_:  # the traceback first, then the one line; still a user error (2)
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback (most recent call last)" in err and "no sample has split='test'" in err
