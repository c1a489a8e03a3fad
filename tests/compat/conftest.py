"""Shared fixtures for the ImageBind compatibility tests: the tiny parity fixture and a model loaded from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebind_fixture import FIXTURE, TINY_HEADS


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURE / "weights.pt").is_file():
        pytest.skip(f"ImageBind parity fixture not found at {FIXTURE}")
    return FIXTURE


@pytest.fixture(scope="session")
def tiny_model(fixture_dir):
    from anybind.compat.imagebind import load_imagebind

    return load_imagebind(fixture_dir / "weights.pt", num_heads=TINY_HEADS)


@pytest.fixture(scope="session")
def captions(fixture_dir) -> list[str]:
    return (fixture_dir / "raw_text.txt").read_text(encoding="utf-8").split("\n")
