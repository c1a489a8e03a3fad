"""``anybind-convert imagebind IN OUT``: an ImageBind ``.pth`` checkpoint -> an anybind safetensors checkpoint.

The output (``OUT.safetensors`` + ``OUT.json``, or ``OUT/model.*`` when OUT is a folder) names every tower by its
registry name and builder arguments, so ``anybind.load(OUT)``, ``anybind-embed``, ``anybind-search`` and training
(``init_from``) rebuild it without ImageBind. Example::

    anybind-convert imagebind imagebind_huge.pth checkpoints/imagebind_huge
    anybind-convert imagebind tiny.pt out/tiny --num-heads vision=4 text=4 audio=4 depth=2 thermal=2 imu=2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ..checkpoint import save_model
from ..errors import AnybindError
from .imagebind import DEFAULT_NUM_HEADS, MODALITIES, load_imagebind


def convert_imagebind(src: str | Path, dst: str | Path, *, num_heads: Mapping[str, int] | None = None,
                      video: bool = False, modalities: Sequence[str] | None = None) -> Path:
    """Convert an ImageBind checkpoint; returns the written ``.safetensors`` path.

    ``modalities`` keeps only those anybind towers (e.g. ``["image", "text"]``); ``video`` adds a ``video`` tower
    (a second copy of the vision weights on disk).
    """
    model = load_imagebind(src, num_heads=num_heads, video=video)
    out = model.to_anybind(video=video)
    if modalities is not None:
        unknown = [m for m in modalities if m not in out.encoders]
        if unknown:
            raise AnybindError(f"{src} has no tower for {unknown}; it has {list(out.encoders)}")
        out = type(out)({m: out.encoders[m] for m in modalities}, out.embed_dim)
    heads = {**DEFAULT_NUM_HEADS, **(num_heads or {})}
    config = {"source": "imagebind", "source_path": str(src), "num_heads": heads}
    return save_model(dst, out, config=config)


def _parse_heads(items: Sequence[str]) -> dict[str, int]:
    heads = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_NUM_HEADS or not value.isdigit():
            raise argparse.ArgumentTypeError(
                f"--num-heads takes MODALITY=N with MODALITY in {', '.join(DEFAULT_NUM_HEADS)}; got {item!r}")
        heads[key] = int(value)
    return heads


def build_parser() -> argparse.ArgumentParser:
    from ..console import ArgumentParser  # one-line errors, --debug

    parser = ArgumentParser(prog="anybind-convert", description="Convert outside checkpoints to anybind's format.")
    sub = parser.add_subparsers(dest="source", required=True)
    ib = sub.add_parser("imagebind", help="an ImageBind state dict (.pth), e.g. imagebind_huge.pth")
    ib.add_argument("src", type=Path, help="ImageBind checkpoint (.pth / .pt)")
    ib.add_argument("dst", type=Path, help="output checkpoint path (OUT -> OUT.safetensors + OUT.json) or folder")
    ib.add_argument("--num-heads", nargs="*", default=[], metavar="MODALITY=N",
                    help=f"attention heads per ImageBind modality (default: {DEFAULT_NUM_HEADS})")
    ib.add_argument("--video", action="store_true", help="also write a video tower (duplicates the vision weights)")
    ib.add_argument("--modalities", nargs="*", default=None, metavar="MODALITY",
                    help=f"keep only these anybind towers ({', '.join(MODALITIES.values())}, video)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        heads = _parse_heads(args.num_heads)
        path = convert_imagebind(args.src, args.dst, num_heads=heads, video=args.video, modalities=args.modalities)
    except (AnybindError, argparse.ArgumentTypeError, OSError) as exc:
        print(f"anybind-convert: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    main()
