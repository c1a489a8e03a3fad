"""Every console command reports a user error in one line with exit status 2, shows the traceback with --debug or
ANYBIND_DEBUG=1, and starts fast enough for --help to need no PyTorch."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(entry: str, *args, env=None, cwd=None, timeout=240):
    prog = "anybind-" + entry.removesuffix("_main").replace("_", "-")
    code = f"import sys; from anybind.cli import {entry}; sys.argv[0] = {prog!r}; {entry}()"
    full = {k: v for k, v in os.environ.items() if k != "ANYBIND_DEBUG"}
    full.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout)


# (console entry, arguments that are a user error, a phrase the one-line message must hold)
CASES = [
    ("search_main", ["--index", "nowhere", "-q", "a dog", "--target", "images"], "did you mean --target image"),
    ("search_main", ["--index", "nowhere", "-q", "/tmp/nope/dog.wav"], "looks like a file path"),
    ("search_main", ["--index", "nowhere", "-q", "a dog"], "--index nowhere: no such folder"),
    ("search_main", ["-q", "a dog"], "the following arguments are required: --index"),
    ("embed_main", ["input=nowhere", "out=store", "model.encoders={text: text_transformer_test}"], "does not exist"),
    ("shard_main", ["input=nowhere", "out=shards"], "nowhere"),
    ("convert_main", ["imagebind", "nowhere.pth", "out"], "nowhere.pth"),
    ("bench_main", ["--suite", "nope"], "invalid choice: 'nope'"),
    ("demo_main", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("prepare_digits_main", ["--fsdd", "nowhere", "--mnist", "nowhere", "--out", "d"], "nowhere"),
    ("train_main", ["debug=smoke", "trainer.max_stepz=3"], "max_stepz"),
    ("eval_main", ["manifest=nowhere.jsonl", "model.encoders={text: text_transformer_test}"], "nowhere.jsonl"),
]


@pytest.mark.parametrize("entry, args, phrase", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_user_errors_are_one_line_and_exit_2(entry, args, phrase, tmp_path):
    proc = run(entry, *args, cwd=tmp_path)
    prog = "anybind-" + entry.removesuffix("_main").replace("_", "-")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr[-3000:]
    assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, tmp_path):
    args = ["--index", "nowhere", "-q", "/tmp/nope/dog.wav"]
    proc = run("search_main", *args, "--debug", cwd=tmp_path) if how == "flag" else \
        run("search_main", *args, env={"ANYBIND_DEBUG": "1"}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "InputError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("anybind-search: error: ")


def test_search_help_needs_no_torch_and_is_fast():
    code = ("import sys, time; t = time.perf_counter(); sys.argv = ['anybind-search', '--help']\n"
            "from anybind.cli import search_main\n"
            "try:\n    search_main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules, 'SECONDS', time.perf_counter() - t)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "cross-modal" in proc.stdout.replace("\n", " ") or "other than the query's own" in proc.stdout
    assert "TORCH False" in proc.stdout  # nothing heavy behind --help
    assert wall < 10, wall  # well under 1 s on an idle machine; generous for a busy one


def test_import_anybind_is_light():
    code = "import sys, anybind, anybind.retrieval, anybind.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.strip() == "False", proc.stderr
    import anybind
    from anybind.retrieval import search

    assert callable(anybind.create_model) and callable(search)  # the lazy names resolve
    module = sys.modules["anybind.retrieval.search"]
    assert module.search is search and anybind.retrieval.search is search  # the submodule does not shadow it
