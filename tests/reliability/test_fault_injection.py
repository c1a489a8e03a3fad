"""Kill every atomic writer before each of its file operations: every published name stays loadable and holds the
previous state or the new one (never a mix), and the next writer recovers. See faults.py for the kill switch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import anybind
from anybind.checkpoint import load_tensors
from anybind.errors import CheckpointError
from anybind.retrieval import EmbeddingStore, Index, StoreWriter, build_index
from anybind.retrieval.index import storage as index_mod
from anybind.train.checkpointing import CheckpointManager, find_resume_checkpoint, load_state

from faults import KillSwitch, Killed, copy_folder, every_kill_point

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny builds and loads: one intra-op thread each (threads only wait for each other here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ checkpoints
def tiny_model(seed: int):
    torch.manual_seed(seed)
    return anybind.create_model({"image": "image_vit_test"})


MODELS = {tag: tiny_model(seed) for seed, tag in enumerate("ABC")}


def same_weights(model, tag: str) -> bool:
    """``model`` (a model or a state dict) holds the weights of ``MODELS[tag]``."""
    ref, got = MODELS[tag].state_dict(), model if isinstance(model, dict) else model.state_dict()
    return got.keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in got.items())


def save(run: Path, step: int, tag: str, keep_last: int = 1) -> None:
    CheckpointManager(run, keep_last=keep_last).save(step, MODELS[tag], {"step": step, "tag": tag})


def checkpoint_checker(allowed: set[str | None]):
    """Every published name of the run leads to one complete checkpoint whose tag is in ``allowed`` (None: the
    run has no checkpoint yet, and then no published name exists)."""

    def check(run: Path, what: str) -> None:
        ck = run / "checkpoints"
        latest = CheckpointManager(run).latest()  # never raises: the pointer is never dangling
        assert find_resume_checkpoint("latest", run) == latest, what
        if latest is None:
            assert None in allowed, f"{what}: the previous checkpoint is gone"
            for name in ("last", "last.json", "last.safetensors"):
                with pytest.raises(CheckpointError):
                    anybind.load(ck / name)
            return
        state = load_state(latest / "state")
        assert state["tag"] in allowed, f"{what}: resume finds {state['tag']}, expected one of {allowed}"
        tags = {t for t in "ABC" if same_weights(anybind.load(ck / "last"), t)}
        for name in ("last.safetensors", "last.json", latest / "model"):  # the same checks, without a model build
            tags |= {t for t in "ABC" if same_weights(load_tensors(ck / name)[0], t)}
        assert tags == {state["tag"]}, f"{what}: published models {tags}, the resume state is {state['tag']}"

    return check


def recover_checkpoints(run: Path) -> None:
    save(run, 9, "C")
    ck = run / "checkpoints"
    assert os.readlink(ck / "last") == "step_000009"
    assert not list(ck.glob(".*.tmp")) and not list(ck.rglob("*.pending"))
    assert [p.name for p in CheckpointManager(run).steps()] == ["step_000009"]  # keep_last=1: the rest pruned


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    empty = root / "empty"
    empty.mkdir()
    one = root / "one"
    save(one, 1, "A")
    two = copy_folder(one, root / "two")
    save(two, 2, "B")
    # a run written by the earlier layout: last.safetensors + last.json files, latest.json pointer
    legacy = copy_folder(one, root / "legacy")
    ck = legacy / "checkpoints"
    for link in ("last", "last.json", "last.safetensors"):
        (ck / link).unlink(missing_ok=True)
    shutil.copyfile(ck / "step_000001" / "model.safetensors", ck / "last.safetensors")
    shutil.copyfile(ck / "step_000001" / "model.json", ck / "last.json")
    (ck / "latest.json").write_text(json.dumps({"step": 1, "path": "step_000001"}))
    return {"empty": empty, "one": one, "two": two, "legacy": legacy}


@pytest.mark.parametrize("start, step, tag, allowed", [
    ("empty", 1, "A", {None, "A"}),  # the first save of a run
    ("one", 2, "B", {"A", "B"}),  # the next save, pruning the previous step
    ("two", 2, "C", {"B", "C"}),  # the final step saved again (a finished run resumed)
    ("legacy", 2, "B", {"A", "B"}),  # the first save into a run of the earlier layout
])
def test_checkpoint_save_killed_at_every_operation(runs, tmp_path, start, step, tag, allowed):
    n = every_kill_point(runs[start], tmp_path, lambda run: save(run, step, tag), checkpoint_checker(allowed),
                         recover=recover_checkpoints)
    assert n >= 10


def test_a_save_switches_one_published_name_once(runs, tmp_path):
    """The defect of issue 15: last.safetensors and last.json were renamed one after the other (a kill between
    them tore the pair). Now a save changes exactly one published name, once: the `last` link."""
    run = copy_folder(runs["one"], tmp_path / "run")
    with KillSwitch(run) as probe:
        save(run, 2, "B")
    published = {"checkpoints/last", "checkpoints/last.json", "checkpoints/last.safetensors", "checkpoints/latest.json"}
    touched = [o for o in probe.ops if {a.strip() for a in o[o.index("(") + 1:-1].split(",")} & published]
    assert len(touched) == 1 and touched[0].startswith("replace(") and touched[0].endswith(", checkpoints/last)"), touched


# ------------------------------------------------------------------------------------------------ plain pairs
def test_save_model_over_an_existing_pair_is_atomic(tmp_path):
    """``anybind.save_model(path)`` (a .safetensors + .json pair, not a run): old or new at every kill point."""
    folder = tmp_path / "template"
    anybind.save_model(folder / "model", MODELS["A"])

    def check(f: Path, what: str) -> None:
        model = anybind.load(f / "model")
        assert same_weights(model, "A") or same_weights(model, "B"), what

    def recover(f: Path) -> None:
        anybind.save_model(f / "model", MODELS["B"])
        assert same_weights(anybind.load(f / "model.safetensors"), "B")
        assert sorted(p.name for p in f.iterdir()) == ["model.json", "model.safetensors"]

    every_kill_point(folder, tmp_path, lambda f: anybind.save_model(f / "model", MODELS["B"]), check, recover)


# ------------------------------------------------------------------------------------------------ store shards
def vectors(n, d=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(n, start=0):
    return [{"id": f"x{i}", "modality": "image", "source": f"x{i}.png"} for i in range(start, start + n)]


def write_shard(path: Path, name: str, v: np.ndarray, start: int, overwrite: bool = False) -> None:
    w = StoreWriter(path, v.shape[1], overwrite=overwrite)
    w.write_shard(name, "image", v, rows(len(v), start))
    w.finalize()


OLD, NEW = vectors(5, seed=1), vectors(3, seed=2)


def test_store_shard_write_killed_at_every_operation(tmp_path):
    template = tmp_path / "template"
    write_shard(template / "store", "s0", OLD, 0)

    def check(f: Path, what: str) -> None:
        store = EmbeddingStore.open(f / "store")  # every shard's sha256 verified
        got = store.vectors()
        assert len(store) in (5, 8), what
        assert np.array_equal(got[:5], OLD) and (len(store) == 5 or np.array_equal(got[5:], NEW)), what

    def recover(f: Path) -> None:
        w = StoreWriter(f / "store", 8)
        if not w.finished("s1"):
            w.write_shard("s1", "image", NEW, rows(3, 5))
        w.finalize()
        assert len(EmbeddingStore.open(f / "store")) == 8
        assert not list((f / "store").rglob(".*.tmp"))

    every_kill_point(template, tmp_path, lambda f: write_shard(f / "store", "s1", NEW, 5), check, recover)


def test_store_overwrite_killed_at_every_operation_never_mixes(tmp_path):
    """``overwrite=True`` drops the old store for a new one: a kill leaves the old store, the new one (with the
    shards it finished: an embedding resumes), or a folder that refuses to open saying it was being rewritten;
    never some old rows with some new ones."""
    template = tmp_path / "template"
    write_shard(template / "store", "s0", OLD[:2], 0)
    w = StoreWriter(template / "store", 8)
    w.write_shard("s1", "image", OLD[2:], rows(3, 2))
    w.finalize()

    def check(f: Path, what: str) -> None:
        try:
            store = EmbeddingStore.open(f / "store")
        except CheckpointError as exc:
            assert "rewritten" in str(exc) or "store.json is missing" in str(exc), f"{what}: {exc}"
            return
        got = store.vectors()  # the old store, or the new one with the shards finished so far (none or all here)
        assert np.array_equal(got, OLD) or np.array_equal(got, NEW) or len(got) == 0, f"{what}: {len(got)} rows"

    def recover(f: Path) -> None:
        write_shard(f / "store", "s0", NEW, 0, overwrite=True)
        assert np.array_equal(EmbeddingStore.open(f / "store").vectors(), NEW)

    every_kill_point(template, tmp_path, lambda f: write_shard(f / "store", "s0", NEW, 0, overwrite=True), check,
                     recover)


# ------------------------------------------------------------------------------------------------ index
def index_of(seed: int, n: int = 30):
    return build_index(vectors(n, d=16, seed=seed), rows(n), kind="flat")


QUERY = vectors(2, d=16, seed=99)


def test_index_save_killed_at_every_operation(tmp_path):
    template = tmp_path / "template"
    index_of(0).save(template / "ix")
    expect = {seed: index_of(seed).search_arrays(QUERY, k=5)[1] for seed in (0, 1)}

    def check(f: Path, what: str) -> None:
        got = Index.load(f / "ix").search_arrays(QUERY, k=5)[1]
        assert np.array_equal(got, expect[0]) or np.array_equal(got, expect[1]), what

    def recover(f: Path) -> None:
        index_of(1).save(f / "ix")
        assert np.array_equal(Index.load(f / "ix").search_arrays(QUERY, k=5)[1], expect[1])
        listed = index_mod.listed_files(f / "ix" / "index.json")
        leftovers = set(os.listdir(f / "ix")) - listed - {"index.json", ".anybind.lock"}
        assert not leftovers, f"files a killed save wrote were not cleaned: {leftovers}"

    every_kill_point(template, tmp_path, lambda f: index_of(1).save(f / "ix"), check, recover)


# ------------------------------------------------------------------------------------------------ converter
@pytest.fixture(scope="module")
def imagebind_files(tmp_path_factory):
    """Two tiny ImageBind-layout checkpoints (text + vision towers), written with ImageBind's key names."""
    from anybind.compat.imagebind import to_imagebind_state_dict

    root = tmp_path_factory.mktemp("imagebind")
    out = {}
    for seed, tag in enumerate("AB"):
        torch.manual_seed(seed)
        towers = {"image": anybind.create_encoder("imagebind_vision_test"),
                  "text": anybind.create_encoder("imagebind_text_test")}
        torch.save(to_imagebind_state_dict(towers), root / f"{tag}.pth")
        out[tag] = (root / f"{tag}.pth", {m: t.state_dict() for m, t in towers.items()})
    return out


def test_converter_killed_at_every_operation(imagebind_files, tmp_path):
    from anybind.compat.convert import convert_imagebind

    heads = {"vision": 2, "text": 2}
    template = tmp_path / "template"
    template.mkdir()
    convert_imagebind(imagebind_files["A"][0], template / "converted", num_heads=heads)

    def which(model) -> str | None:
        for tag, (_, towers) in imagebind_files.items():
            if all(torch.equal(v, towers["text"][k]) for k, v in model.encoders["text"].state_dict().items()):
                return tag
        return None

    def check(f: Path, what: str) -> None:
        assert which(anybind.load(f / "converted")) in ("A", "B"), what

    def recover(f: Path) -> None:
        convert_imagebind(imagebind_files["B"][0], f / "converted", num_heads=heads)
        assert which(anybind.load(f / "converted.safetensors")) == "B"
        assert sorted(p.name for p in f.iterdir()) == ["converted.json", "converted.safetensors"]

    every_kill_point(template, tmp_path,
                     lambda f: convert_imagebind(imagebind_files["B"][0], f / "converted", num_heads=heads), check,
                     recover)


# ------------------------------------------------------------------------------------------------ a real SIGKILL
def test_sigkill_while_saving_checkpoints_leaves_last_loadable(tmp_path):
    """A process saving checkpoints back to back, killed with SIGKILL at random instants: after every kill the
    published names load, and the next process continues."""
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, torch, anybind
        from anybind.train.checkpointing import CheckpointManager
        torch.manual_seed(0)
        model = anybind.create_model({{"image": "image_vit_test"}})
        mgr = CheckpointManager({str(run)!r}, keep_last=2)
        step = int(sys.argv[1])
        while True:
            step += 1
            mgr.save(step, model, {{"step": step}})
            print(step, flush=True)
    """)
    rng = np.random.default_rng(0)
    last_step = 0
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", script, str(last_step)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
        try:
            first = proc.stdout.readline()
            assert first.strip(), "the saver did not start"
            time.sleep(float(rng.uniform(0.0, 0.3)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        latest = CheckpointManager(run).latest()
        assert latest is not None
        state = load_state(latest / "state")
        assert state["step"] >= int(first) and state["step"] > last_step
        for name in ("last", "last.safetensors", "last.json"):
            assert anybind.load(run / "checkpoints" / name).modalities == ["image"]
        last_step = state["step"]
