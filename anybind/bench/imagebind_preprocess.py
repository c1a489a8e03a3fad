"""anybind's ImageBind-parity preprocessing against ImageBind's own ``data.py``, on the same files.

``python -m anybind.bench.imagebind_preprocess --imagebind-src PATH`` (``tools/bench_imagebind.py --imagebind-src PATH
--preprocess``): ``PATH`` is a local ImageBind source tree (the folder holding ``imagebind/data.py``); nothing is
downloaded and no ImageBind code ships with anybind. For each modality, ``rounds`` interleaved pairs of fresh
processes run ImageBind's ``load_and_transform_*`` and :func:`anybind.compat.loading.load_and_transform` over the same
inputs, twice each (the first call pays one-time set-up such as building a tokenizer; the second is the steady
state), and report the seconds of both calls, the peak memory over the process's baseline, the ratio of the
medians (ImageBind / anybind: above 1 means anybind is faster) and the parity of the outputs (the issue's bar: audio
to 1e-3, images and video exact, text token-exact).

Inputs (made in ``--tmp`` from ``../shared/data``): the first ``--audio`` FSDD recordings (8 kHz WAVs, resampled to
16 kHz), ``--images`` COCO-size JPEGs (640x360 frames of the Big Buck Bunny clip), ``--captions`` generated
captions, and the 30-s Big Buck Bunny clip for video.

ImageBind's audio loader calls ``torchaudio.load``, which needs FFmpeg libraries that are often absent; where it
fails, the ImageBind child decodes with ``soundfile`` instead (the same samples as a float32 ``(channels, samples)``
tensor) and the result records ``"imagebind_audio_decoder": "soundfile"``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

from .common import parity, sig, write_json
from .index_measure import load_averages, peak_rss_bytes, rss_bytes

MODALITIES = ("audio", "image", "text", "video")
IMAGEBIND_FUNCTIONS = {"audio": "load_and_transform_audio_data", "image": "load_and_transform_vision_data",
                       "text": "load_and_transform_text", "video": "load_and_transform_video_data"}


def prepare_inputs(tmp: Path, data: Path, n_audio: int = 200, n_images: int = 200,
                   n_captions: int = 1000) -> dict[str, list[str]]:
    """The files and captions both sides read (written once into ``tmp``)."""
    from .embed_files import make_captions, make_jpegs

    tmp.mkdir(parents=True, exist_ok=True)
    fsdd = data / "fsdd" / "recordings"
    video = data / "video" / "big_buck_bunny_0_30.webm"
    for p in (fsdd, video):
        if not p.exists():
            raise SystemExit(f"{p}: missing; the preprocessing benchmark reads ../shared/data (see its README)")
    audio = sorted(str(p) for p in fsdd.glob("*.wav"))[:n_audio]
    jpegs = tmp / "jpegs"
    if len(list(jpegs.glob("*.jpg"))) < n_images:
        make_jpegs(video, jpegs, n=n_images)
    images = sorted(str(p) for p in jpegs.glob("*.jpg"))[:n_images]
    captions_file = make_captions(tmp / "captions.jsonl", n=n_captions)
    captions = [json.loads(line)["text"] for line in captions_file.read_text().splitlines()]
    inputs = {"audio": audio, "image": images, "text": captions, "video": [str(video)]}
    (tmp / "inputs.json").write_text(json.dumps(inputs))
    return inputs


def check_source(src: str | Path) -> Path:
    """``src`` resolved, or a clear error when it holds no ``imagebind/data.py``."""
    src_path = Path(src).expanduser().resolve()
    if not (src_path / "imagebind" / "data.py").is_file():
        raise SystemExit(f"--imagebind-src {src_path}: no imagebind/data.py there; give the folder of an ImageBind "
                         "source tree")
    return src_path


def _imagebind_function(src: str, modality: str, probe: str):
    sys.path.insert(0, str(check_source(src)))
    import importlib

    data = importlib.import_module("imagebind.data")
    decoder = "torchaudio"
    if modality == "audio":
        import torchaudio

        try:
            torchaudio.load(probe)
        except Exception:  # noqa: BLE001 - torchaudio without an FFmpeg backend: decode the same samples otherwise
            import soundfile as sf

            def load(path, *args, **kwargs):
                wav, sr = sf.read(path, dtype="float32", always_2d=True)
                return torch.from_numpy(wav.T.copy()), sr

            torchaudio.load = load
            decoder = "soundfile"
    if modality == "video":
        from pytorchvideo.data.encoded_video import EncodedVideo

        code = EncodedVideo.from_path.__func__.__code__
        if "sample_rate" not in code.co_varnames[:code.co_argcount] and not code.co_flags & 0x08:
            # the released pytorchvideo (0.1.5) takes no audio sample rate; ImageBind passes one with
            # decode_audio=False, where it is unused
            original = EncodedVideo.from_path

            def from_path(path, decode_audio=True, decoder="pyav", sample_rate=None, **kwargs):
                return original(path, decode_audio=decode_audio, decoder=decoder)

            EncodedVideo.from_path = from_path
    sampler = getattr(data, "ConstantClipsPerVideoSampler", None)
    if modality in ("audio", "video") and sampler is not None and _spaces_by_clip_count(sampler):
        data.ConstantClipsPerVideoSampler = PinnedClipSampler
    fn = getattr(data, IMAGEBIND_FUNCTIONS[modality])
    return (lambda items: fn(items, "cpu")), decoder


class PinnedClipSampler:
    """Evenly spaced clip windows as the pytorchvideo commit ImageBind pins samples them: ``clips`` starts from 0 to
    ``duration - clip_duration`` in steps of ``span / (clips - 1)``. The released pytorchvideo 0.1.5 steps by
    ``span / clips`` (its last clip ends before the end of the file); with it installed, the ImageBind child uses this
    sampler so that both sides cut the same windows (what :func:`anybind.compat.preprocess.clip_windows` does)."""

    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration, self.clips = Fraction(clip_duration), int(clips_per_video)
        self.index = 0

    def __call__(self, last_clip_time, video_duration, annotation=None):
        span = Fraction(max(Fraction(video_duration) - self.clip_duration, 0))
        step = span / max(self.clips - 1, 1)
        index, start = self.index, step * self.index
        self.index += 1
        last = self.index >= self.clips or step * self.index > span
        if last:
            self.index = 0
        return start, start + self.clip_duration, index, 0, last


def _spaces_by_clip_count(sampler_cls) -> bool:
    """Whether this pytorchvideo's ``ConstantClipsPerVideoSampler`` steps by ``span / clips`` (0.1.5)."""
    s = sampler_cls(clip_duration=2, clips_per_video=3)
    starts = [s(0.0, 6.0, annotation=None)[0] for _ in range(3)]
    return starts[-1] != 4


def child(side: str, src: str, modality: str, work: str) -> dict:
    """One fresh process: time ``side``'s preprocessing of the prepared inputs of ``modality`` (two calls)."""
    work_path = Path(work)
    items = json.loads((work_path / "inputs.json").read_text())[modality]
    decoder = None
    if side == "imagebind":
        fn, decoder = _imagebind_function(src, modality, items[0])
    elif side == "anybind":
        import importlib

        for name in ("torchaudio.compliance.kaldi", "torchvision.transforms"):  # what ImageBind's data.py has
            importlib.import_module(name)  # imported before its clock starts: neither first call pays for them

        from anybind.compat.loading import load_and_transform

        fn = lambda items: load_and_transform(modality, items)  # noqa: E731
    else:
        raise SystemExit(f"unknown side {side!r}")
    base = rss_bytes()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn(items)
        times.append(time.perf_counter() - t0)
    torch.save(out, work_path / f"{side}-{modality}.pt")
    return {"first_s": times[0], "second_s": times[1], "peak_over_base_mb": max(0, peak_rss_bytes() - base) / 2**20,
            "items": len(items), "decoder": decoder}


def _run_child(side: str, src: str, modality: str, work: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "anybind.bench.imagebind_preprocess", "--_child", side, src, modality,
                          str(work)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"preprocessing child {side} {modality} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(src: str | Path, work: Path, modalities=MODALITIES, *, rounds: int = 3, log=print) -> list[dict]:
    """One row per modality: ImageBind's and anybind's median seconds (first and second call), peak memory, the
    ratios and the parity of the outputs."""
    rows = []
    for m in modalities:
        runs: dict[str, list[dict]] = {"imagebind": [], "anybind": []}
        for r in range(rounds):
            for side in (("imagebind", "anybind") if r % 2 == 0 else ("anybind", "imagebind")):
                runs[side].append(_run_child(side, str(src), m, work))
        ref = torch.load(work / f"imagebind-{m}.pt", weights_only=True)
        ours = torch.load(work / f"anybind-{m}.pt", weights_only=True)
        med = {side: {k: statistics.median(r[k] for r in rs) for k in ("first_s", "second_s", "peak_over_base_mb")}
               for side, rs in runs.items()}
        if ref.shape != ours.shape:
            check = {"shape_imagebind": list(ref.shape), "shape_anybind": list(ours.shape)}
        elif not ref.is_floating_point():
            check = {"token_exact": bool(torch.equal(ref, ours)), "mismatched": int((ref != ours).sum())}
        else:
            check = {**parity(ref.flatten(1), ours.flatten(1)), "exact": bool(torch.equal(ref, ours))}
        row = {"modality": m, "items": runs["anybind"][0]["items"],
               "imagebind_s": sig(med["imagebind"]["second_s"]), "anybind_s": sig(med["anybind"]["second_s"]),
               "speedup": sig(med["imagebind"]["second_s"] / med["anybind"]["second_s"]),
               "imagebind_first_s": sig(med["imagebind"]["first_s"]), "anybind_first_s": sig(med["anybind"]["first_s"]),
               "speedup_first": sig(med["imagebind"]["first_s"] / med["anybind"]["first_s"]),
               "imagebind_peak_mb": round(med["imagebind"]["peak_over_base_mb"]),
               "anybind_peak_mb": round(med["anybind"]["peak_over_base_mb"]),
               "imagebind_runs": [sig(r["second_s"]) for r in runs["imagebind"]],
               "anybind_runs": [sig(r["second_s"]) for r in runs["anybind"]], "rounds": rounds, **check}
        if m == "audio":
            row["imagebind_audio_decoder"] = runs["imagebind"][0]["decoder"]
        log(json.dumps(row))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m anybind.bench.imagebind_preprocess",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--imagebind-src", type=Path, help="an ImageBind source tree (holding imagebind/data.py)")
    ap.add_argument("--modalities", nargs="*", default=list(MODALITIES), choices=MODALITIES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--audio", type=int, default=200, help="FSDD recordings")
    ap.add_argument("--images", type=int, default=200, help="640x360 JPEGs")
    ap.add_argument("--captions", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/anybind_preprocess_bench"))
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        print(json.dumps(child(*a._child)))
        return {}
    if a.imagebind_src is None:
        ap.error("--imagebind-src is required: the folder of an ImageBind source tree")
    check_source(a.imagebind_src)
    from ..data.digits import default_data_dir
    from .common import environment

    prepare_inputs(a.tmp, a.data or default_data_dir(), a.audio, a.images, a.captions)
    result = {"environment": environment(torch.device("cpu")),
              "rows": compare(a.imagebind_src, a.tmp, a.modalities, rounds=a.rounds)}
    result["environment"]["loadavg_after"] = load_averages()
    if a.json:
        write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
