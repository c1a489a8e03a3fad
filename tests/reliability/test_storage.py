"""Storage faults: user folders are never emptied, one writer per store / index, interrupted writes leave no trace."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from anybind.errors import CheckpointError
from anybind.io import LockedError, WriterLock, atomic_write_bytes
from anybind.retrieval import Index, StoreWriter, build_index, write_store
from anybind.retrieval.index import storage as index_mod


def vectors(n=40, d=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(n, modality="image"):
    return [{"id": f"{modality}{i}", "modality": modality, "source": f"{modality}{i}.png"} for i in range(n)]


def small_index(seed=0, n=40):
    return build_index(vectors(n, seed=seed), rows(n), kind="flat")


def user_folder(path: Path) -> dict:
    path.mkdir(parents=True)
    (path / "README.md").write_text("mine\n")
    (path / "results.csv").write_text("a,b\n1,2\n")
    (path / "sub").mkdir()
    (path / "sub" / "notes.txt").write_text("keep\n")
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_index_save_refuses_a_user_folder_and_deletes_nothing(tmp_path):
    folder = tmp_path / "mine"
    before = user_folder(folder)
    with pytest.raises(CheckpointError, match="not an anybind index"):
        small_index().save(folder)
    after = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_index_save_refuses_the_store_folder(tmp_path):
    store = write_store(tmp_path / "store", vectors(), rows(40))
    with pytest.raises(CheckpointError, match="store"):
        small_index().save(store.path)
    assert (store.path / "store.json").exists()
    assert len(type(store).open(store.path)) == 40


def test_resave_removes_only_the_files_its_own_manifest_listed(tmp_path):
    folder = tmp_path / "ix"
    small_index(seed=0).save(folder)
    first = set(os.listdir(folder))
    (folder / "my-notes.txt").write_text("a file the user put there later")
    small_index(seed=1).save(folder)
    assert (folder / "my-notes.txt").read_text().startswith("a file")
    listed = index_mod.listed_files(folder / "index.json")
    stale = first - {"index.json", ".anybind.lock"} - listed
    assert stale and not stale & set(os.listdir(folder))  # the old data files the new manifest dropped went
    got = Index.load(folder)
    assert np.array_equal(got.search_arrays(vectors(1, seed=9), k=5)[1], small_index(seed=1).search_arrays(vectors(1, seed=9), k=5)[1])


def test_a_failed_save_keeps_the_previous_index_loadable(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    small_index(seed=0).save(folder)
    want = Index.load(folder).search_arrays(vectors(1, seed=5), k=3)

    def boom(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(index_mod, "atomic_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        small_index(seed=1).save(folder)
    got = Index.load(folder).search_arrays(vectors(1, seed=5), k=3)
    assert np.array_equal(got[1], want[1])


def test_temp_files_of_a_killed_writer_are_cleaned_by_the_next(tmp_path):
    folder = tmp_path / "ix"
    small_index().save(folder)
    (folder / ".metadata.abc123.tmp").write_bytes(b"half written")
    small_index(seed=2).save(folder)
    assert not list(folder.glob(".*.tmp"))


def test_two_store_writers_the_second_fails_naming_the_pid(tmp_path):
    first = StoreWriter(tmp_path / "s", 16)
    with pytest.raises(LockedError, match=f"PID {os.getpid()}"):
        StoreWriter(tmp_path / "s", 16)
    first.finalize()
    StoreWriter(tmp_path / "s", 16).finalize()  # free again once the first finished


def test_store_writer_refuses_a_user_folder_even_with_overwrite(tmp_path):
    folder = tmp_path / "mine"
    before = user_folder(folder)
    with pytest.raises(CheckpointError, match="not an anybind"):
        StoreWriter(folder, 16, overwrite=True)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_lock_held_by_another_process_blocks_and_dies_with_it(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    script = textwrap.dedent(f"""
        import sys, time
        from anybind.io import WriterLock
        lock = WriterLock({str(folder)!r}, "run directory").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"PID {proc.pid}"):
            WriterLock(folder, "run directory").acquire()
    finally:
        proc.kill()
        proc.wait()
    with WriterLock(folder, "run directory") as lock:  # the lock file is still there; the lock is not
        assert lock.held and (folder / ".anybind.lock").exists()


def test_shared_writers_coexist_but_exclude_an_exclusive_one(tmp_path):
    a = WriterLock(tmp_path, "store", shared=True).acquire()
    b = WriterLock(tmp_path, "store", shared=True).acquire()
    with pytest.raises(LockedError):
        WriterLock(tmp_path, "store").acquire()
    a.release(), b.release()
    WriterLock(tmp_path, "store").acquire().release()


def test_atomic_write_failure_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))
