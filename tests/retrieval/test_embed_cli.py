"""anybind-embed as a user meets it: interruption keeps work, shards flush by time, folders skip sidecar texts,
the summary agrees with the store, audio tracks of video files embed as audio, user errors are one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from retrieval_assets import tiny_model, write_image, write_wav

from anybind.errors import Interrupted
from anybind.retrieval import EmbeddingStore, embed_to_store
from anybind.retrieval import embed as embed_mod
from anybind.retrieval import shards
from anybind.retrieval.embed import auto_workers, items_from_folder

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TEXT_MODEL = "model.encoders={text: text_transformer_test}"


def cli(name: str, *args, cwd=None, timeout=240, env=None):
    """Run a console entry point of this checkout in a fresh process."""
    code = f"import sys; from anybind.cli import {name}; sys.argv[0] = {name!r}; {name}()"
    full_env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def model():
    return tiny_model(("image", "text", "audio"))


def captions(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "text": f"caption number {i} of a thing"}) + "\n"
                            for i in range(n)))
    return path


class StopAfter:
    """Wraps a tower: raises KeyboardInterrupt (Ctrl-C) on its ``n``-th call."""

    def __init__(self, model, modality, n):
        self.model, self.modality, self.n, self.calls = model, modality, n, 0
        self.real = model.encoders[modality].forward

    def __enter__(self):
        def forward(x):
            self.calls += 1
            if self.calls == self.n:
                raise KeyboardInterrupt
            return self.real(x)

        self.model.encoders[self.modality].forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.encoders[self.modality].forward


def test_ctrl_c_keeps_the_current_shard_and_a_rerun_finishes_it(model, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SORT_WINDOW", 1)  # texts in order: every batch a safe point
    manifest = captions(tmp_path / "caps.jsonl", 40)
    out = tmp_path / "store"
    with StopAfter(model, "text", 4), pytest.raises(Interrupted) as info:  # 3 batches of 5 done, then Ctrl-C
        embed_to_store(model, manifest, out, batch_size=5, shard_size=4096, progress=False)
    summary = info.value.summary
    assert info.value.status == 130 and isinstance(info.value, KeyboardInterrupt)
    assert summary.done == 15 and summary.planned == 40 and summary.interrupted
    kept = EmbeddingStore.open(out)
    assert len(kept) == 15 and [s.name for s in kept.shards] == ["00000-text.000000"]  # a part of shard 0

    again = embed_to_store(model, manifest, out, batch_size=5, shard_size=4096, progress=False)
    assert again.embedded == 25 and again.reused == 15 and again.shards_reused == 1
    store = EmbeddingStore.open(out)
    ids = [r["id"] for r in store.metadata()]
    assert ids == [f"c{i}" for i in range(40)]  # every row once, in plan order
    want = model.embed({"text": [f"caption number {i} of a thing" for i in range(40)]}, progress=False)["text"]
    np.testing.assert_allclose(store.vectors(), want.numpy(), atol=1e-5)
    # a third run reuses both parts and embeds nothing
    third = embed_to_store(model, manifest, out, batch_size=5, progress=False)
    assert third.embedded == 0 and third.reused == 40 and third.shards_reused == 2


def test_shards_flush_by_time_and_a_whole_shard_replaces_stale_parts(model, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SORT_WINDOW", 1)
    manifest = captions(tmp_path / "caps.jsonl", 12)
    out = tmp_path / "store"
    summary = embed_to_store(model, manifest, out, batch_size=4, flush_seconds=0.0, progress=False)
    names = [s.name for s in summary.store.shards]
    assert names == ["00000-text.000000", "00000-text.000004", "00000-text.000008"]  # a part after every batch
    assert len(summary.store) == 12 and summary.shards_written == 3
    # without a time flush the shard is written whole, once
    whole = embed_to_store(model, manifest, tmp_path / "whole", batch_size=4, flush_seconds=None, progress=False)
    assert [s.name for s in whole.store.shards] == ["00000-text"]
    np.testing.assert_allclose(whole.store.vectors(), summary.store.vectors(), atol=1e-6)
    # a damaged part is embedded again from there on; the parts after it go
    part = EmbeddingStore.open(out).shards[1]
    part.vectors_path.write_bytes(b"garbage")
    redo = embed_to_store(model, manifest, out, batch_size=4, flush_seconds=None, progress=False)
    assert redo.reused == 4 and redo.embedded == 8
    assert [s.name for s in redo.store.shards] == ["00000-text.000000", "00000-text.000004"]
    np.testing.assert_allclose(redo.store.vectors(), whole.store.vectors(), atol=1e-6)


def test_ctrl_c_within_a_run_of_length_ordered_texts_keeps_the_runs_finished(model, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SORT_WINDOW", 2)  # texts ordered by length two batches at a time
    manifest = captions(tmp_path / "caps.jsonl", 40)
    out = tmp_path / "store"
    with StopAfter(model, "text", 4), pytest.raises(Interrupted) as info:  # 3 batches of 5, then Ctrl-C
        embed_to_store(model, manifest, out, batch_size=5, progress=False)
    assert info.value.summary.done == 10  # the first run of 2 batches; the third batch is embedded again
    assert len(EmbeddingStore.open(out)) == 10
    again = embed_to_store(model, manifest, out, batch_size=5, progress=False)
    assert again.embedded == 30 and again.reused == 10
    store = EmbeddingStore.open(out)
    assert [r["id"] for r in store.metadata()] == [f"c{i}" for i in range(40)]
    want = model.embed({"text": [f"caption number {i} of a thing" for i in range(40)]}, progress=False)["text"]
    np.testing.assert_allclose(store.vectors(), want.numpy(), atol=1e-5)


def test_rerun_summary_agrees_with_the_store(model, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        write_wav(folder / f"c{i}.wav", 300 + 100 * i)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    first = embed_to_store(model, folder, tmp_path / "store", progress=False)
    second = embed_to_store(model, folder, tmp_path / "store", progress=False)
    for s in (first, second):
        assert len(s.store) == 3 and len(s.store.errors) == 1
    assert (first.embedded, first.failed) == (3, 1)
    assert (second.embedded, second.failed, second.reused, second.reused_failed) == (0, 0, 3, 1)
    text = second.describe()
    assert "3 vectors" in text and "1 input failed" in text and "(3 vectors, 1 failed input)" in text


def test_folder_mode_skips_sidecar_texts_and_counts_what_it_skipped(tmp_path):
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    write_wav(folder / "bird.wav", 500)
    (folder / "bird.txt").write_text("Bird call / recorded by someone / CC BY")  # attribution beside its clip
    write_wav(folder / "sub" / "whale.wav", 200)
    (folder / "sub" / "whale.wav.txt").write_text("transcript")  # the other sidecar naming
    write_image(folder / "cat.png", (10, 200, 10))
    (folder / "caption.txt").write_text("a caption that stands alone")  # no media of its name: a text item
    (folder / "notes.md").write_text("not a modality")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.txt").write_text("hidden")
    items, ignored = items_from_folder(folder)
    assert sorted((it["id"], it["modality"]) for it in items) == [
        ("bird.wav", "audio"), ("caption.txt", "text"), ("cat.png", "image"), ("sub/whale.wav", "audio")]
    assert ignored == {embed_mod.SIDECAR_REASON: 2, "files of no known modality (.md 1)": 1}
    items, _ = items_from_folder(folder, text_sidecars=True)
    assert {"bird.txt", "sub/whale.wav.txt"} <= {it["id"] for it in items}
    # a forced modality names what it could not read, by suffix
    items, ignored = items_from_folder(folder, "audio")
    assert sorted(it["id"] for it in items) == ["bird.wav", "sub/whale.wav"]
    assert ignored == {embed_mod.SIDECAR_REASON: 2, "files that are not audio (.md 1, .png 1, .txt 1)": 3}


def test_txt_is_text_by_name_and_points_when_asked(tmp_path):
    import anybind
    from anybind.modality import modality_for_path

    cloud = tmp_path / "scan.txt"
    cloud.write_text("\n".join(f"{i} {i * 0.5} {-i}" for i in range(30)))
    assert modality_for_path(cloud) == "text"
    assert ".txt" in anybind.get_modality("points").readable_extensions
    items, ignored = items_from_folder(tmp_path, "points")
    assert [it["id"] for it in items] == ["scan.txt"] and ignored == {}
    pts = anybind.get_modality("points").read(cloud)
    assert tuple(pts.shape) == (30, 3)


def test_auto_workers_follow_the_machine():
    assert auto_workers("cpu", cores=1) == 0 and auto_workers("cpu", cores=2) == 0 and auto_workers("cpu", cores=3) == 0
    assert auto_workers("cpu", cores=4) == 1
    assert auto_workers("cpu", cores=16) == 4 and auto_workers("cpu", cores=96) == 8
    assert auto_workers("cuda", cores=8) == 7


def test_cli_summary_says_what_was_embedded_per_modality(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    write_wav(folder / "a.wav", 300)
    (folder / "a.txt").write_text("attribution")
    (folder / "caption.txt").write_text("a red thing")
    proc = cli("embed_main", f"input={folder}", f"out={tmp_path / 'store'}", "progress=false",
               "model.encoders={audio: audio_vit_test, text: text_transformer_test}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "embedded audio 1, text 1 (2 items, 0 failed)" in out
    assert f"skipped: 1 {embed_mod.SIDECAR_REASON}" in out
    assert "Parsing tokenizer" not in out and "HYDRA" not in out  # stdout holds the summary only


@pytest.mark.parametrize("sig, status, word, workers", [(signal.SIGINT, 130, "interrupted", 0),
                                                        (signal.SIGTERM, 143, "terminated (SIGTERM)", 0),
                                                        (signal.SIGINT, 130, "interrupted", 1)])
def test_cli_signal_keeps_work_and_prints_the_resume_command(tmp_path, sig, status, word, workers):
    manifest = captions(tmp_path / "caps.jsonl", 3000)
    out = tmp_path / "store"
    args = [f"input={manifest}", f"out={out}", TEXT_MODEL, "progress=false", "batch_size=1", "flush_seconds=0.5",
            "overwrite=true", f"num_workers={workers}"]  # with a worker, the process must still exit
    code = "import sys; from anybind.cli import embed_main; sys.argv[0] = 'anybind-embed'; embed_main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not (out / "shards").is_dir() or not list((out / "shards").glob("*.done.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 180, "no shard part was written"
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr
    store = EmbeddingStore.open(out)
    assert 0 < len(store) < 3000
    assert f"anybind-embed: {word}: {len(store)} of 3000 inputs are done and kept in {out}" in stderr
    resume = stderr.strip().splitlines()[-1].strip()
    assert resume.startswith("anybind-embed input=") and "overwrite" not in resume and "flush_seconds=0.5" in resume
    assert f"store {out}: {len(store)} vectors" in stdout  # the summary of what was kept
    # the resume command (faster batches) embeds only the rest
    proc = cli("embed_main", *[a for a in args if a != "overwrite=true" and a != "batch_size=1"], "batch_size=256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = EmbeddingStore.open(out)
    assert len(final) == 3000 and len({r["id"] for r in final.metadata()}) == 3000
    assert f"reused from an earlier run" in proc.stdout and f"({len(store)} vectors" in proc.stdout


def test_cli_user_errors_are_one_line_with_exit_2(tmp_path):
    proc = cli("embed_main", f"input={tmp_path / 'nope'}", f"out={tmp_path / 'store'}", TEXT_MODEL)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("anybind-embed: error: input ") and "does not exist" in proc.stderr
    proc = cli("embed_main", f"input={tmp_path}", "out=x", "shard_sise=3", TEXT_MODEL)  # a misspelled key
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "shard_sise" in proc.stderr, proc.stderr
    proc = cli("embed_main", f"input={tmp_path / 'nope'}", f"out={tmp_path / 'store'}", TEXT_MODEL, "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "does not exist" in proc.stderr


def _video_with_sound(path: Path, seconds: float = 1.0) -> Path:
    import av

    c = av.open(str(path), "w")
    v = c.add_stream("mpeg4", rate=8)
    v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    for i in range(int(8 * seconds)):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
        for p in v.encode(frame):
            c.mux(p)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for lo in range(0, len(tone), 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, lo:lo + 1024], format="fltp", layout="mono")
        frame.sample_rate = 16000
        frame.pts = lo
        for p in a.encode(frame):
            c.mux(p)
    for s in (v, a):
        for p in s.encode():
            c.mux(p)
    c.close()
    return path


def test_audio_track_of_a_video_file_embeds_as_audio(model, tmp_path):
    from anybind.data.readers import open_audio

    clip = _video_with_sound(tmp_path / "talk.mp4")
    src = open_audio(clip)
    wave, sr = src.read_all()
    assert sr == 16000 and wave.shape[0] == 1 and abs(wave.shape[1] - 16000) < 2048
    spectrum = np.abs(np.fft.rfft(wave[0].numpy()))
    assert abs(np.argmax(spectrum) * sr / wave.shape[1] - 440) < 10  # the tone that was written
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "talk", "audio": "talk.mp4", "image": None}) + "\n")
    summary = embed_to_store(model, manifest, tmp_path / "store", progress=False)
    assert summary.store.modality_counts() == {"audio": 1} and not summary.store.errors
    items, _ = items_from_folder(tmp_path, "audio")  # given as audio, a video file's track is read
    assert [it["id"] for it in items] == ["talk.mp4"]
    silent = tmp_path / "silent.mp4"
    from retrieval_assets import write_video

    write_video(silent, 40)
    with pytest.raises(Exception, match="no audio track"):
        open_audio(silent)


@pytest.mark.shared_data
def test_the_shared_video_with_sound_embeds_as_audio(model, tmp_path):
    video = SHARED / "video" / "big_buck_bunny_0_30.webm"
    if not video.is_file():
        pytest.skip("../shared/data/video is missing")
    z = model.embed({"audio": [str(video)]}, progress=False)["audio"]
    assert z.shape == (1, model.embed_dim) and np.isfinite(z.numpy()).all()


def test_workers_stay_quiet_only_about_the_parent_hanging_up(capsys):
    from anybind.data.dataset import _quiet_when_the_parent_hangs_up as hook

    for exc in (BrokenPipeError("pipe"), ConnectionResetError("reset"), EOFError("eof")):
        hook(type(exc), exc, None)
    assert capsys.readouterr().err == ""
    hook(ValueError, ValueError("a real error"), None)
    assert "ValueError: a real error" in capsys.readouterr().err
