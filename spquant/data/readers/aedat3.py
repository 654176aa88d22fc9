"""AEDAT 3.1 files (iniVation cAER; DVS128 Gesture) and the DVS128 Gesture label files.

Layout: text header lines starting with ``#`` (the first is ``#!AER-DAT3.1``, the last
``#!END-HEADER``), then packets. Each packet has a 28-byte little-endian header (int16 event type,
int16 source, int32 event size, int32 timestamp offset, int32 timestamp overflow, int32 capacity,
int32 number, int32 valid) followed by ``capacity * size`` bytes of events. Polarity packets (type 1)
hold 8-byte events: uint32 data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and int32
timestamp (us; the packet's overflow counter supplies bits 31 and up). Other packet types are
skipped. The loop runs once per packet (thousands per file), never per event.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "a.aedat")
>>> write_aedat31(p, make_events([5, 6], [7, 8], [100, 200], [1, 0]))
>>> read_aedat31(p).events["t"].tolist()
[100, 200]
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events
from spquant.data.readers._io import read_bytes, split_text_header

MAGIC = "#!AER-DAT3.1"
END_HEADER = "#!END-HEADER"
PACKET_HEADER = np.dtype(
    [
        ("type", "<i2"),
        ("source", "<i2"),
        ("size", "<i4"),
        ("ts_offset", "<i4"),
        ("ts_overflow", "<i4"),
        ("capacity", "<i4"),
        ("number", "<i4"),
        ("valid", "<i4"),
    ]
)
POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])
POLARITY_TYPE = 1
KNOWN_SENSORS: dict[str, SensorSize] = {
    "DVS128": (128, 128),
    "DAVIS240": (240, 180),
    "DAVIS346": (346, 260),
    "DVXPLORER": (640, 480),
}


def _sensor_from_header(lines: list[str]) -> SensorSize | None:
    for line in lines:
        m = re.match(r"#\s*Source\s+\d+:\s*(\S+)", line)
        if m:
            name = m.group(1).upper()
            for key, size in KNOWN_SENSORS.items():
                if name.startswith(key):
                    return size
    return None


def read_aedat31(path, sensor_size: SensorSize | None = None) -> Recording:
    """Read the polarity events of an AEDAT 3.1 file.

    The sensor size comes from ``sensor_size`` or else the header's ``#Source N: <camera>`` line
    (DVS128 -> 128x128, DAVIS240, DAVIS346); unknown cameras give None (no bounds check).
    """
    data = read_bytes(path)
    lines, offset = split_text_header(data, b"#", path)
    if not lines or not lines[0].startswith(MAGIC):
        first = lines[0] if lines else data[:16]
        raise EventFileError(
            path, f"not an AEDAT 3.1 file: first header line must be {MAGIC!r}, got {first!r}"
        )
    if not any(line.startswith(END_HEADER) for line in lines):
        raise EventFileError(path, f"AEDAT 3.1 header has no {END_HEADER!r} line")
    size = tuple(sensor_size) if sensor_size is not None else _sensor_from_header(lines)
    chunks_d, chunks_t = [], []
    pos, n = offset, len(data)
    while pos < n:
        if n - pos < PACKET_HEADER.itemsize:
            raise EventFileError(
                path, f"truncated: {n - pos} bytes at offset {pos} are too few for a 28-byte packet header"
            )
        h = np.frombuffer(data, PACKET_HEADER, count=1, offset=pos)[0]
        ev_size, cap, num = int(h["size"]), int(h["capacity"]), int(h["number"])
        if ev_size <= 0 or cap < 0 or num < 0 or num > cap:
            raise EventFileError(
                path,
                f"corrupt packet header at offset {pos} (event size {ev_size}, capacity {cap}, number {num})",
            )
        length = cap * ev_size
        start = pos + PACKET_HEADER.itemsize
        if start + length > n:
            raise EventFileError(
                path,
                f"truncated: packet at offset {pos} needs {length} bytes of events, only {n - start} left",
            )
        if int(h["type"]) == POLARITY_TYPE:
            if ev_size != POLARITY_EVENT.itemsize:
                raise EventFileError(
                    path, f"polarity packet at offset {pos} has event size {ev_size}, expected 8"
                )
            if int(h["ts_overflow"]) < 0:
                raise EventFileError(
                    path,
                    f"polarity packet at offset {pos} has a negative timestamp overflow "
                    f"counter ({int(h['ts_overflow'])})",
                )
            ev = np.frombuffer(data, POLARITY_EVENT, count=num, offset=start)
            if num and int(ev["t"].min()) < 0:
                bad = int(np.argmax(ev["t"] < 0))
                raise EventFileError(
                    path,
                    f"event {bad} of the packet at offset {pos} has bit 31 of its 31-bit "
                    "timestamp set (corrupt event)",
                )
            chunks_d.append(ev["data"])
            chunks_t.append(ev["t"].astype(np.int64) + (int(h["ts_overflow"]) << 31))
        pos = start + length
    if chunks_d:
        d = np.concatenate(chunks_d)
        t = np.concatenate(chunks_t)
    else:
        d, t = np.zeros(0, np.uint32), np.zeros(0, np.int64)
    keep = (d & 1) == 1
    d, t = d[keep], t[keep]
    x = ((d >> 17) & 0x7FFF).astype(np.uint16)
    y = ((d >> 2) & 0x7FFF).astype(np.uint16)
    p = ((d >> 1) & 1).astype(np.uint8)
    return Recording(finish_events(path, x, y, t, p, size), size)


def write_aedat31(path, events: np.ndarray, packet_size: int = 4096, camera: str = "DVS128") -> None:
    """Write events as an AEDAT 3.1 file of polarity packets (``packet_size`` events each)."""
    t = events["t"].astype(np.int64)
    d = (
        1
        | (events["p"].astype(np.uint32) << 1)
        | (events["y"].astype(np.uint32) << 2)
        | (events["x"].astype(np.uint32) << 17)
    )
    header = (
        f"{MAGIC}\r\n#Format: RAW\r\n#Source 1: {camera}\r\n#Start-Time: 2017-01-01 00:00:00\r\n"
        f"{END_HEADER}\r\n"
    ).encode()
    parts = [header]
    for s in range(0, t.size, packet_size):  # once per packet
        tt, dd = t[s : s + packet_size], d[s : s + packet_size]
        overflow = int(tt[0] >> 31)
        if np.any((tt >> 31) != overflow):
            raise ValueError("a packet may not span a timestamp overflow; use a smaller packet_size")
        h = np.zeros(1, PACKET_HEADER)
        h["type"], h["source"], h["size"], h["ts_offset"] = POLARITY_TYPE, 1, 8, 4
        h["ts_overflow"], h["capacity"], h["number"], h["valid"] = overflow, tt.size, tt.size, tt.size
        ev = np.empty(tt.size, POLARITY_EVENT)
        ev["data"], ev["t"] = dd, tt & 0x7FFFFFFF
        parts += [h.tobytes(), ev.tobytes()]
    with open(os.fspath(path), "wb") as f:
        f.write(b"".join(parts))


def read_gesture_labels(path) -> np.ndarray:
    """Read a DVS128 Gesture ``*_labels.csv`` file (``class,startTime_usec,endTime_usec``).

    Returns a structured array with fields ``label`` (0-based: the file's class 1..11 minus 1),
    ``start`` and ``end`` (us).
    """
    path = os.fspath(path)
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EventFileError(path, f"gesture label file is not UTF-8 text (byte {e.start})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise EventFileError(path, f"gesture label file is not valid CSV ({e})") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows or [c.strip() for c in rows[0]] != ["class", "startTime_usec", "endTime_usec"]:
        raise EventFileError(
            path, "gesture label file must start with the header 'class,startTime_usec,endTime_usec'"
        )
    out = np.zeros(len(rows) - 1, dtype=[("label", "<i8"), ("start", "<i8"), ("end", "<i8")])
    if any(len(r) != 3 for r in rows[1:]):
        raise EventFileError(path, "gesture label file has a row without exactly 3 fields")
    try:
        ints = [[int(c) for c in r] for r in rows[1:]]
    except ValueError as e:
        raise EventFileError(path, f"gesture label file has a non-integer field ({str(e)[:80]})") from None
    if any(not 0 <= v < 2**62 for r in ints for v in r):
        raise EventFileError(path, "gesture label file has a negative or huge value")
    vals = np.array(ints, dtype=np.int64).reshape(-1, 3)
    if vals.size and (vals[:, 0].min() < 1 or np.any(vals[:, 2] <= vals[:, 1])):
        raise EventFileError(path, "gesture labels must be >= 1 and every segment must end after it starts")
    out["label"], out["start"], out["end"] = vals[:, 0] - 1, vals[:, 1], vals[:, 2]
    return out


def split_gesture_segments(events: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Cut a recording into its labelled gestures: ``[(events with start <= t < end, label), ...]``."""
    t = events["t"]
    lo = np.searchsorted(t, labels["start"], side="left")
    hi = np.searchsorted(t, labels["end"], side="left")
    return [(events[a:b], int(lab)) for a, b, lab in zip(lo, hi, labels["label"])]
