"""AEDAT 2.0 files (jAER; CIFAR10-DVS): ``#`` header lines, then big-endian 8-byte events.

Each event is a big-endian uint32 address followed by a big-endian uint32 timestamp (microseconds;
wrap-arounds of the 32-bit counter are unrolled). How the address encodes x, y and polarity depends
on the camera:

* ``'dvs128'`` (CIFAR10-DVS, 128x128): p = bit 0, x = bits 1-7, y = bits 8-14, bit 31 set = external
  (non-pixel) event, dropped.
* ``'davis240'`` / ``'davis346'`` (DAVIS240 240x180, DAVIS346 346x260): p = bit 11, x = bits 12-21,
  y = bits 22-30, bit 31 set = APS/IMU sample and bit 10 set = external event, both dropped.

Coordinates are returned as stored (jAER's raw addresses; e.g. DVS128 x runs right-to-left as seen
by the camera), not flipped.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "a.aedat")
>>> write_aedat2(p, make_events([5], [7], [100], [1]))
>>> read_aedat2(p).events[["x", "y", "t", "p"]].tolist()
[(5, 7, 100, 1)]
"""

from __future__ import annotations

import os

import numpy as np

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events
from spquant.data.readers._io import body_as, read_bytes, split_text_header

MAGIC = "#!AER-DAT2.0"
LAYOUTS: dict[str, SensorSize] = {"dvs128": (128, 128), "davis240": (240, 180), "davis346": (346, 260)}
EVENT = np.dtype([("addr", ">u4"), ("t", ">u4")])


def _unwrap32(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.int64)
    if t.size > 1:
        wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -(2**31))])
        t = t + wraps * 2**32
    return t


def read_aedat2(path, layout: str = "dvs128", sensor_size: SensorSize | None = None) -> Recording:
    """Read an AEDAT 2.0 file. ``layout``: 'dvs128' (default), 'davis240' or 'davis346'.

    ``sensor_size`` overrides the layout's size for the bounds check.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown AEDAT 2.0 address layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    data = read_bytes(path)
    lines, offset = split_text_header(data, b"#", path)
    if not lines or not lines[0].startswith(MAGIC):
        first = lines[0] if lines else data[:16]
        raise EventFileError(path, f"not an AEDAT 2.0 file: first header line must be {MAGIC!r}, got {first!r}")
    rec = body_as(data, offset, EVENT, path, "AEDAT 2.0 events")
    addr = rec["addr"].astype(np.uint32)
    t = _unwrap32(rec["t"])
    size = tuple(sensor_size) if sensor_size is not None else LAYOUTS[layout]
    if layout == "dvs128":
        keep = (addr >> 31) == 0
        p = addr & 1
        x = (addr >> 1) & 0x7F
        y = (addr >> 8) & 0x7F
    else:
        keep = ((addr >> 31) == 0) & (((addr >> 10) & 1) == 0)
        p = (addr >> 11) & 1
        x = (addr >> 12) & 0x3FF
        y = (addr >> 22) & 0x1FF
    x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    events = finish_events(path, x.astype(np.uint16), y.astype(np.uint16), t, p.astype(np.uint8), size)
    return Recording(events, size)


def write_aedat2(path, events: np.ndarray, layout: str = "dvs128") -> None:
    """Write events as an AEDAT 2.0 file with the given address layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    x = events["x"].astype(np.uint32)
    y = events["y"].astype(np.uint32)
    p = events["p"].astype(np.uint32)
    w, h = LAYOUTS[layout]
    if x.size and (x.max() >= w or y.max() >= h):
        raise ValueError(f"coordinates do not fit the {layout} sensor {w}x{h}")
    if layout == "dvs128":
        addr = p | (x << 1) | (y << 8)
    else:
        addr = (p << 11) | (x << 12) | (y << 22)
    rec = np.empty(x.size, dtype=EVENT)
    rec["addr"] = addr
    rec["t"] = events["t"].astype(np.int64) % 2**32
    header = (
        f"{MAGIC}\r\n# This is a raw AE data file written by spquant\r\n"
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
        "# Timestamps tick is 1 us\r\n"
    ).encode()
    with open(os.fspath(path), "wb") as f:
        f.write(header + rec.tobytes())
