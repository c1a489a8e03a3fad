"""MSR-VTT text-video retrieval on the 1k-A test split (the protocol of most published numbers).

Layout (the usual distribution of the videos with the split files)::

    <root>/MSRVTT_JSFUSION_test.csv        key,vid_key,video_id,sentence  (1000 rows: the 1k-A split, one caption
                                           per video; also looked for under annotation/, msrvtt_data/, data/)
    <root>/videos/all/<video_id>.mp4       (or videos/, MSRVTT/videos/all/, TestVideo/, TrainValVideo/)
    <root>/MSRVTT_data.json                the caption JSON ({"videos": [...], "sentences": [{"video_id",
                                           "caption"}, ...]}; also annotation/MSR_VTT.json), for split=full

``split="1k-A"``: the CSV's 1000 videos and its one sentence each. ``split="full"``: the official test split of
the caption JSON (2990 videos) with all 20 captions of each; a video->text hit is any of them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BenchmarkError
from .base import BenchmarkData, Item, first_existing, published_split, read_csv, read_json, rel, require_dir

CSV_PLACES = ("MSRVTT_JSFUSION_test.csv", "annotation/MSRVTT_JSFUSION_test.csv", "msrvtt_data/MSRVTT_JSFUSION_test.csv",
              "data/MSRVTT_JSFUSION_test.csv", "annotations/MSRVTT_JSFUSION_test.csv")
JSON_PLACES = ("MSRVTT_data.json", "msrvtt_data/MSRVTT_data.json", "annotation/MSR_VTT.json", "MSR_VTT.json",
               "annotation/MSRVTT_data.json", "data/MSRVTT_data.json")
VIDEO_PLACES = ("videos/all", "videos", "MSRVTT/videos/all", "TestVideo", "TrainValVideo", "video")
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv")
LAYOUT = ("MSRVTT_JSFUSION_test.csv (the 1k-A split) or MSRVTT_data.json (captions), and the videos as "
          "videos/all/<video_id>.mp4")


def _video_dir(root: Path) -> Path:
    return first_existing(root, VIDEO_PLACES, "msrvtt", "the video folder", LAYOUT, kind="dir")


def _find_video(folder: Path, vid: str) -> Path | None:
    for ext in VIDEO_EXTS:
        p = folder / f"{vid}{ext}"
        if p.is_file():
            return p
    return None


def load_msrvtt(root: str | Path, *, split: str = "1k-A", **_) -> BenchmarkData:
    root = require_dir(Path(root), "msrvtt", LAYOUT)
    split, published = published_split("msrvtt", split, "1k-A")
    if split == "1k-A":
        table = first_existing(root, CSV_PLACES, "msrvtt", "the 1k-A split file MSRVTT_JSFUSION_test.csv", LAYOUT)
        rows = read_csv(table, "msrvtt", ("video_id", "sentence"))
        pairs = [(r["video_id"], r["sentence"]) for r in rows]
        listing = [table]
    else:
        table = first_existing(root, JSON_PLACES, "msrvtt", "the caption JSON (MSRVTT_data.json / MSR_VTT.json)", LAYOUT)
        data = read_json(table, "msrvtt")
        if not isinstance(data, dict) or "sentences" not in data or "videos" not in data:
            raise BenchmarkError(f"msrvtt: {table} lacks 'videos' and 'sentences' (the MSR-VTT caption JSON layout)")
        test = {v["video_id"] for v in data["videos"] if v.get("split") == "test"}
        if not test:
            raise BenchmarkError(f"msrvtt: {table} marks no video with split 'test'")
        pairs = [(s["video_id"], s["caption"]) for s in data["sentences"] if s["video_id"] in test]
        listing = [table]
    videos = _video_dir(root)
    items, missing = [], []
    for vid in dict.fromkeys(v for v, _ in pairs):
        p = _find_video(videos, vid)
        if p is None:
            missing.append(f"{rel(videos, root)}/{vid}.mp4")
        else:
            items.append(Item(vid, str(p)))
    if not items:
        raise BenchmarkError(f"msrvtt at {root}: none of the {len(missing)} videos of {table.name} is in {videos} "
                             f"(e.g. {missing[0] if missing else '-'})")
    return BenchmarkData(
        name="msrvtt", task="retrieval", modality="video", root=root,
        split={"name": "split", "value": split, "index": rel(listing[0], root)}, items=items, missing=missing,
        files=[rel(Path(it.source), root) for it in items], captions=pairs, published=published["videos"],
        protocol=published["protocol"])
