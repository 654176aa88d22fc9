"""Fixtures for the data tests: the shared real data folder (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real data not available: {path} is absent (it lives in ../shared/data next to the project)"
        )
    return path


@pytest.fixture
def shared_events() -> Path:
    """../shared/data/events (real event-camera recordings)."""
    return _need(SHARED_DATA / "events")


@pytest.fixture
def shared_mnist() -> Path:
    """../shared/data/mnist (the four MNIST IDX files, gzip)."""
    return _need(SHARED_DATA / "mnist")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
