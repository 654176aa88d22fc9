"""Event arrays: the one in-memory representation of event-camera data in spquant.

Events are numpy structured arrays with the fields ``x, y, t, p`` (tonic's convention, so tonic
transforms can be mixed in): ``x``/``y`` pixel coordinates (uint16), ``t`` timestamp in
microseconds (int64), ``p`` polarity (uint8, 1 = ON / brighter, 0 = OFF / darker). Arrays are sorted
by ``t`` (stable, so events with equal timestamps keep their file order).

>>> import numpy as np
>>> ev = make_events(x=[1, 0], y=[2, 3], t=[20, 10], p=[1, 0])
>>> ev["t"].tolist(), ev["x"].tolist()
([10, 20], [0, 1])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spquant.errors import EventFileError

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])

SensorSize = tuple[int, int]  # (width, height)


class Recording(NamedTuple):
    """What a reader returns: the events and the sensor size ``(width, height)`` (None if unknown)."""

    events: np.ndarray
    sensor_size: SensorSize | None


def make_events(x, y, t, p, *, sort: bool = True) -> np.ndarray:
    """Build an event array from four equally long sequences (sorted by ``t`` unless ``sort=False``).

    >>> make_events([0], [0], [5], [1]).dtype == EVENT_DTYPE
    True
    """
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    n = x.shape[0]
    if not (y.shape[0] == t.shape[0] == p.shape[0] == n):
        raise ValueError(f"x, y, t, p must have the same length, got {x.shape, y.shape, t.shape, p.shape}")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return sort_events(ev) if sort else ev


def sort_events(events: np.ndarray) -> np.ndarray:
    """Return ``events`` sorted by ``t`` (stable). Returns the input itself when already sorted."""
    t = events["t"]
    if t.size < 2 or bool(np.all(t[1:] >= t[:-1])):
        return events
    return events[np.argsort(t, kind="stable")]


def finish_events(
    path,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    sensor_size: SensorSize | None,
    *,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate decoded columns and assemble a sorted event array (used by every reader).

    Raises :class:`EventFileError` (naming ``path``) when the stream is empty, a coordinate lies
    outside ``sensor_size`` (width, height), a timestamp is negative or a polarity is not 0/1.
    """
    n = int(np.asarray(t).shape[0])
    if n == 0 and not allow_empty:
        raise EventFileError(path, "contains no events (empty event stream)")
    if n and sensor_size is not None:
        w, h = int(sensor_size[0]), int(sensor_size[1])
        xmax, ymax = int(np.max(x)), int(np.max(y))
        if xmax >= w or ymax >= h or int(np.min(x)) < 0 or int(np.min(y)) < 0:
            raise EventFileError(
                path,
                f"event coordinates outside the declared sensor size {w}x{h} "
                f"(max x = {xmax}, max y = {ymax})",
            )
    if n and int(np.min(t)) < 0:
        raise EventFileError(path, f"negative timestamp {int(np.min(t))} us (corrupt time field)")
    if n and int(np.max(p)) > 1:
        raise EventFileError(path, f"polarity values must be 0 or 1, found {int(np.max(p))}")
    if n and (np.max(x) > 0xFFFF or np.max(y) > 0xFFFF):
        raise EventFileError(path, "coordinates do not fit 16 bits")
    return make_events(x, y, t, p)
