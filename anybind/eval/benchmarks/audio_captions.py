"""Audio-caption retrieval: Clotho and AudioCaps (text->audio and audio->text R@1/5/10).

Clotho (v2, as published on Zenodo, archives extracted in place)::

    <root>/clotho_captions_<split>.csv     file_name,caption_1,...,caption_5   (split: evaluation, validation,
                                           development; also looked for under csv/, captions/)
    <root>/<split>/<file_name>             the clips (also clotho_audio_<split>/, clotho_audio_<split>/<split>/,
                                           audio/<split>/)

AudioCaps (the caption CSVs of the AudioCaps repository, and clips fetched from YouTube)::

    <root>/<split>.csv                     audiocap_id,youtube_id,start_time,caption   (split: test, val, train;
                                           also dataset/, csv/, data/)
    <root>/<split>/<clip>                  <clip> = <youtube_id>.wav, Y<youtube_id>.wav, <youtube_id>_<start>.wav or
                                           <audiocap_id>.wav (any of .wav .flac .ogg .mp3); also audio/<split>/,
                                           waveforms/<split>/, audio/

Captions group by clip; every caption queries all clips found (text->audio) and every clip all captions of clips
found (audio->text, where a hit is any of its captions). Clips the CSV names but the copy lacks are listed as
missing and their captions left out (AudioCaps copies usually lack some: YouTube removes videos).
"""

from __future__ import annotations

from pathlib import Path

from .base import (BenchmarkData, Item, files_under, first_existing, no_items, published_split, read_csv, rel,
                   require_dir)

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
CLOTHO_LAYOUT = "clotho_captions_<split>.csv and the clips under <split>/ (Clotho v2 as extracted)"
AUDIOCAPS_LAYOUT = "<split>.csv (audiocap_id,youtube_id,start_time,caption) and the clips under <split>/"


def load_clotho(root: str | Path, *, split: str = "evaluation", **_) -> BenchmarkData:
    root = require_dir(Path(root), "clotho", CLOTHO_LAYOUT)
    split, published = published_split("clotho", split, "evaluation")
    name = f"clotho_captions_{split}.csv"
    table = first_existing(root, (name, f"csv/{name}", f"captions/{name}"), "clotho", name, CLOTHO_LAYOUT)
    rows = read_csv(table, "clotho", ("file_name", "caption_1"))
    audio = first_existing(root, (split, f"clotho_audio_{split}/{split}", f"clotho_audio_{split}", f"audio/{split}"),
                           "clotho", f"the {split} audio folder", CLOTHO_LAYOUT, kind="dir")
    caption_cols = [c for c in rows[0] if c.startswith("caption_")]
    items, missing, captions, listed = [], [], [], set()
    for r in rows:
        fname = r["file_name"]
        listed.add(fname)
        p = audio / fname
        cid = rel(p, root)
        if p.is_file():
            items.append(Item(cid, str(p)))
        else:
            missing.append(cid)
        captions += [(cid, r[c]) for c in caption_cols if r.get(c)]
    if not items:
        raise no_items("clotho", root, "clips", missing)
    extra = [rel(p, root) for p in files_under(audio, AUDIO_EXTS) if p.name not in listed]
    return BenchmarkData(
        name="clotho", task="retrieval", modality="audio", root=root,
        split={"name": "split", "value": split, "index": rel(table, root)}, items=items, missing=missing, extra=extra,
        files=[it.id for it in items], captions=captions, published=published["clips"],
        protocol=published["protocol"])


def _clip_names(r: dict) -> list[str]:
    """File stems a copy may use for one AudioCaps row (downloaders name clips differently)."""
    yt, start = r["youtube_id"], r.get("start_time", "")
    names = [yt, f"Y{yt}"]
    if start:
        names += [f"{yt}_{start}", f"Y{yt}_{start}"]
        try:
            names += [f"{yt}_{int(float(start))}", f"Y{yt}_{int(float(start))}"]
        except ValueError:
            pass
    if r.get("audiocap_id"):
        names.append(r["audiocap_id"])
    return list(dict.fromkeys(names))


def load_audiocaps(root: str | Path, *, split: str = "test", **_) -> BenchmarkData:
    root = require_dir(Path(root), "audiocaps", AUDIOCAPS_LAYOUT)
    split, published = published_split("audiocaps", split, "test")
    table = first_existing(root, (f"{split}.csv", f"dataset/{split}.csv", f"csv/{split}.csv", f"data/{split}.csv"),
                           "audiocaps", f"{split}.csv", AUDIOCAPS_LAYOUT)
    rows = read_csv(table, "audiocaps", ("youtube_id", "caption"))
    audio = first_existing(root, (split, f"audio/{split}", f"waveforms/{split}", "audio", "waveforms"),
                           "audiocaps", f"the {split} audio folder", AUDIOCAPS_LAYOUT, kind="dir")
    present = {p.stem: p for p in files_under(audio, AUDIO_EXTS)}
    items, missing, captions, used = [], [], [], set()
    seen: dict[str, str] = {}
    for r in rows:
        yt = r["youtube_id"]
        if yt not in seen:
            hit = next((present[n] for n in _clip_names(r) if n in present), None)
            seen[yt] = rel(hit, root) if hit is not None else ""
            if hit is not None:
                items.append(Item(yt, str(hit)))
                used.add(hit.stem)
            else:
                missing.append(f"{rel(audio, root)}/{yt}.wav")
        captions.append((yt, r["caption"]))
    if not items:
        raise no_items("audiocaps", root, "clips", missing)
    # a folder of this split only: its other files are extra; a shared folder (audio/) holds other splits too
    extra = sorted(rel(p, root) for stem, p in present.items() if stem not in used) if audio.name == split else []
    return BenchmarkData(
        name="audiocaps", task="retrieval", modality="audio", root=root,
        split={"name": "split", "value": split, "index": rel(table, root)}, items=items, missing=missing, extra=extra,
        files=[seen[it.id] for it in items], captions=captions, published=published["clips"],
        protocol=published["protocol"])
