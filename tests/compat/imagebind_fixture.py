"""Where the ImageBind parity fixture lives and how to read it (imported by tests and conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

FIXTURE = Path(os.environ.get("ANYBIND_IMAGEBIND_FIXTURE",
                              Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "imagebind_tiny"))
# The fixture's tiny model uses fewer heads than the released huge one (heads are not stored in checkpoints).
TINY_HEADS = {"vision": 4, "text": 4, "audio": 4, "depth": 2, "thermal": 2, "imu": 2}


def load_pt(fixture_dir: Path, name: str):
    return torch.load(fixture_dir / name, weights_only=True)
