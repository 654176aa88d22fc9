"""Helpers shared by the data tests."""

from __future__ import annotations

import numpy as np


def random_events(rng: np.random.Generator, n: int, w: int, h: int, t_max: int = 1_000_000) -> np.ndarray:
    from spquant.data.events import make_events

    return make_events(
        rng.integers(0, w, n),
        rng.integers(0, h, n),
        np.sort(rng.integers(0, t_max, n)),
        rng.integers(0, 2, n),
    )


def python_lines_run(fn, *args, **kwargs):
    """Run fn and count the Python source lines executed (all frames): a deterministic stand-in
    for 'is this vectorised?' that no machine load can change."""
    import sys

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.settrace(old)
    return count, result
