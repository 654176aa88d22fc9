"""N-MNIST / N-Caltech101 ATIS ``.bin`` files (Orchard et al. 2015).

Each event is 5 bytes: byte 0 = x (8 bit), byte 1 = y (8 bit), byte 2 bit 7 = polarity (1 = ON),
bytes 2 (low 7 bits), 3, 4 = a 23-bit big-endian timestamp in microseconds. Events with
``y == 240`` are timestamp-overflow markers, not pixels: like the reference reader of the dataset
authors (``eventvision.py``, also used by tonic) each marker adds 2**13 us to every later timestamp
and is dropped.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "a.bin")
>>> write_atis_bin(p, make_events([1, 2], [3, 4], [10, 20], [1, 0]))
>>> read_atis_bin(p, sensor_size=(34, 34)).events["x"].tolist()
[1, 2]
"""

from __future__ import annotations

import os

import numpy as np

from spquant.data.events import Recording, SensorSize, finish_events
from spquant.data.readers._io import body_as, read_bytes

OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13
NMNIST_SENSOR: SensorSize = (34, 34)
NCALTECH101_SENSOR: SensorSize = (240, 180)


def read_atis_bin(path, sensor_size: SensorSize | None = None) -> Recording:
    """Read an N-MNIST / N-Caltech101 ``.bin`` file.

    ``sensor_size``: (width, height) to check coordinates against, e.g. ``(34, 34)`` for N-MNIST or
    ``(240, 180)`` for N-Caltech101; None (default) checks nothing and reports the size as unknown
    (the format does not store it).
    """
    data = read_bytes(path)
    raw = body_as(data, 0, np.dtype((np.uint8, 5)), path, "ATIS events")
    x = raw[:, 0].astype(np.uint16)
    y = raw[:, 1].astype(np.uint16)
    p = (raw[:, 2] >> 7).astype(np.uint8)
    t = ((raw[:, 2].astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    overflow = y == OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow, dtype=np.int64) * OVERFLOW_INCREMENT_US
        keep = ~overflow
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    events = finish_events(path, x, y, t, p, sensor_size)
    return Recording(events, None if sensor_size is None else tuple(sensor_size))


def write_atis_bin(path, events: np.ndarray) -> None:
    """Write events as an ATIS ``.bin`` file (x, y < 240 and < 256; t < 2**23 us; sorted by t).

    Timestamps of 2**23 us or more are written with overflow markers (y = 240) so that
    :func:`read_atis_bin` restores them.
    """
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    t = events["t"].astype(np.int64)
    p = events["p"].astype(np.int64)
    if x.size and (x.max() > 255 or y.max() >= OVERFLOW_Y or t.min() < 0):
        raise ValueError("ATIS .bin needs 0 <= x < 256, 0 <= y < 240 and t >= 0")
    if x.size > 1 and np.any(np.diff(t) < 0):
        raise ValueError("events must be sorted by t")
    # overflow markers: marker k (k = 1, 2, ...) is inserted before the first event with
    # t >= k * 2**13 once the 23-bit field is exceeded; keep it simple: use markers only when needed.
    n_over = np.zeros_like(t)
    if t.size and t.max() >= 2**23:
        n_over = np.maximum(0, (t - (2**23 - 1) + OVERFLOW_INCREMENT_US - 1) // OVERFLOW_INCREMENT_US)
    stamp = t - n_over * OVERFLOW_INCREMENT_US
    rec = np.zeros((t.size, 5), dtype=np.uint8)
    rec[:, 0] = x
    rec[:, 1] = y
    rec[:, 2] = (p << 7) | ((stamp >> 16) & 0x7F)
    rec[:, 3] = (stamp >> 8) & 0xFF
    rec[:, 4] = stamp & 0xFF
    if n_over.size and n_over.max() > 0:
        # insert (n_over[i] - n_over[i-1]) markers before event i
        prev = np.concatenate([[0], n_over[:-1]])
        k = n_over - prev
        parts = []
        marker = np.array([[0, OVERFLOW_Y, 0, 0, 0]], dtype=np.uint8)
        starts = np.flatnonzero(k)
        last = 0
        for s in starts:  # once per overflow, not per event
            parts.append(rec[last:s])
            parts.append(np.repeat(marker, k[s], axis=0))
            last = s
        parts.append(rec[last:])
        rec = np.concatenate(parts)
    with open(os.fspath(path), "wb") as f:
        f.write(rec.tobytes())
