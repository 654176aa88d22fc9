"""AEDAT 2.0 files (jAER; CIFAR10-DVS): ``#`` header lines, then big-endian 8-byte events.

Each event is a big-endian uint32 address followed by a big-endian uint32 timestamp (microseconds;
wrap-arounds of the 32-bit counter are unrolled). How the address encodes x, y and polarity depends
on the camera:

* ``'dvs128'`` (CIFAR10-DVS, 128x128): p = bit 0, x = bits 1-7, y = bits 8-14, bit 31 set = external
  (non-pixel) event, dropped.
* ``'davis240'`` / ``'davis346'`` (DAVIS240 240x180, DAVIS346 346x260): p = bit 11, x = bits 12-21,
  y = bits 22-30, bit 31 set = APS/IMU sample and bit 10 set = external event, both dropped.

``convention`` (DVS128 layout only) says how address bits become x, y and p:

* ``'raw'`` (default): x = bits 1-7, y = bits 8-14, p = bit 0, exactly as stored. In jAER's DVS128
  convention bit 0 = 1 is an OFF event, so here p = 1 means OFF, unlike spquant's usual p = 1 ON.
* ``'spikingjelly'``: x = 127 - (bits 8-14), y = 127 - (bits 1-7), p = 1 - bit 0 -- what SpikingJelly
  returns for CIFAR10-DVS (upright pictures, p = 1 ON). The CIFAR10-DVS data set uses this one.
* ``'tonic'``: x = bits 8-14, y = bits 1-7, p = bit 0 -- what ``tonic.io.read_dvs_128`` returns.

The tests pin all three against SpikingJelly and tonic reading the same file.

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
CONVENTIONS = ("raw", "spikingjelly", "tonic")
EVENT = np.dtype([("addr", ">u4"), ("t", ">u4")])


def _unwrap32(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.int64)
    if t.size > 1:
        wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -(2**31))])
        t = t + wraps * 2**32
    return t


def _dvs128_axes(x, y, p, convention: str):
    """Raw DVS128 address fields -> (x, y, p) in ``convention`` (an involution for each convention)."""
    if convention == "spikingjelly":
        return 127 - y, 127 - x, 1 - p
    if convention == "tonic":
        return y, x, p
    return x, y, p


def read_aedat2(
    path, layout: str = "dvs128", sensor_size: SensorSize | None = None, convention: str = "raw"
) -> Recording:
    """Read an AEDAT 2.0 file. ``layout``: 'dvs128' (default), 'davis240' or 'davis346';
    ``convention`` (dvs128): 'raw', 'spikingjelly' or 'tonic' (see the module docstring).

    ``sensor_size`` overrides the layout's size for the bounds check.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown AEDAT 2.0 address layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    if convention not in CONVENTIONS or (convention != "raw" and layout != "dvs128"):
        raise ValueError(
            f"convention must be one of {CONVENTIONS} ('raw' only for {layout}), got {convention!r}"
        )
    data = read_bytes(path)
    lines, offset = split_text_header(data, b"#", path)
    if not lines or not lines[0].startswith(MAGIC):
        first = lines[0] if lines else data[:16]
        raise EventFileError(
            path, f"not an AEDAT 2.0 file: first header line must be {MAGIC!r}, got {first!r}"
        )
    rec = body_as(data, offset, EVENT, path, "AEDAT 2.0 events")
    addr = rec["addr"].astype(np.uint32)
    t = _unwrap32(rec["t"])
    size = tuple(sensor_size) if sensor_size is not None else LAYOUTS[layout]
    if layout == "dvs128":
        keep = (addr >> 31) == 0
        p = addr & 1
        x, y, p = _dvs128_axes((addr >> 1) & 0x7F, (addr >> 8) & 0x7F, p, convention)
    else:
        keep = ((addr >> 31) == 0) & (((addr >> 10) & 1) == 0)
        p = (addr >> 11) & 1
        x = (addr >> 12) & 0x3FF
        y = (addr >> 22) & 0x1FF
    x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    events = finish_events(path, x.astype(np.uint16), y.astype(np.uint16), t, p.astype(np.uint8), size)
    return Recording(events, size)


def write_aedat2(path, events: np.ndarray, layout: str = "dvs128", convention: str = "raw") -> None:
    """Write events as an AEDAT 2.0 file with the given address layout; ``events`` are in
    ``convention`` (dvs128), so ``read_aedat2(..., convention=c)`` returns them unchanged."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    if convention not in CONVENTIONS or (convention != "raw" and layout != "dvs128"):
        raise ValueError(
            f"convention must be one of {CONVENTIONS} ('raw' only for {layout}), got {convention!r}"
        )
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = events["p"].astype(np.int64)
    w, h = LAYOUTS[layout]
    if x.size and (x.max() >= w or y.max() >= h):
        raise ValueError(f"coordinates do not fit the {layout} sensor {w}x{h}")
    if layout == "dvs128":
        x, y, p = _dvs128_axes(x, y, p, convention)
    x, y, p = x.astype(np.uint32), y.astype(np.uint32), p.astype(np.uint32)
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
