"""Prophesee DAT event files (Gen1 automotive ``*_td.dat``, N-CARS ``.dat``) and Gen1 box files.

DAT layout: text header lines starting with ``%`` (``% Height``/``% Width`` or ``% geometry WxH``
give the sensor size when present; otherwise Gen1's 304x240 is assumed for type-0 files and the size
is left unknown for others), then one byte event type and one byte event size, then little-endian
8-byte events: uint32 timestamp (us) and uint32 packing x (bits 0-13), y (bits 14-27) and polarity
(bits 28-31). Event types with this 2D packing: 0 (``Event2D``: ATIS Gen1, N-CARS) and 12
(``EventCD``: Metavision / EVK4 / IMX636 recordings, the 1-Megapixel automotive set).

Box files ``*_bbox.npy`` are plain numpy structured arrays (header checked against the file size, no
pickle) with
fields ``ts`` (older files: ``t``), ``x, y, w, h, class_id`` and optionally ``confidence``,
``track_id``.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "a_td.dat")
>>> write_prophesee_dat(p, make_events([300], [200], [7], [1]))
>>> read_prophesee_dat(p).events[["x", "y", "t", "p"]].tolist()
[(300, 200, 7, 1)]
"""

from __future__ import annotations

import os
import re

import numpy as np

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events
from spquant.data.readers._io import body_as, read_bytes, split_text_header

GEN1_SENSOR: SensorSize = (304, 240)
DAT_EVENT = np.dtype([("t", "<u4"), ("xyp", "<u4")])
EVENT_TYPE_2D = 0
EVENT_TYPE_CD = 12
DAT_2D_TYPES = {EVENT_TYPE_2D: "Event2D", EVENT_TYPE_CD: "EventCD"}
BOX_FIELDS = ("ts", "x", "y", "w", "h", "class_id")
BOX_DTYPE = np.dtype(
    [
        ("ts", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "u1"),
        ("confidence", "<f4"),
        ("track_id", "<u4"),
    ]
)


def _dat_layout(data: bytes, path) -> tuple[int, SensorSize | None]:
    lines, offset = split_text_header(data, b"%", path)
    if not lines:
        raise EventFileError(path, "not a Prophesee DAT file: no '%' header lines")
    info = {}
    for line in lines:
        m = re.match(r"%\s*(\w+)\s+(.*)$", line)
        if m:
            info[m.group(1).lower()] = m.group(2).strip()
    if len(data) - offset < 2:
        raise EventFileError(path, "truncated: no event type / event size bytes after the '%' header")
    ev_type, ev_size = data[offset], data[offset + 1]
    if ev_type not in DAT_2D_TYPES or ev_size != DAT_EVENT.itemsize:
        known = ", ".join(f"{k} ({v})" for k, v in DAT_2D_TYPES.items())
        raise EventFileError(
            path,
            f"unsupported DAT event type {ev_type} / size {ev_size} (readable: 8-byte 2D "
            f"events of type {known})",
        )
    size: SensorSize | None = GEN1_SENSOR if ev_type == EVENT_TYPE_2D else None
    try:
        if "width" in info and "height" in info:
            size = (int(info["width"]), int(info["height"]))
        elif "geometry" in info:
            w, h = info["geometry"].lower().split("x")
            size = (int(w), int(h))
    except ValueError:
        raise EventFileError(
            path,
            f"bad sensor size in the DAT header: width {info.get('width')!r}, height "
            f"{info.get('height')!r}, geometry {info.get('geometry')!r}",
        ) from None
    if size is not None and not (0 < size[0] <= 1 << 14 and 0 < size[1] <= 1 << 14):
        raise EventFileError(
            path, f"sensor size {size[0]}x{size[1]} in the DAT header does not fit 14-bit coordinates"
        )
    return offset + 2, size


def read_prophesee_dat(path, sensor_size: SensorSize | None = None) -> Recording:
    """Read a Prophesee DAT file (Gen1 ``_td.dat``, N-CARS, 1-Megapixel ``_td.dat``, Metavision CD)."""
    data = read_bytes(path)
    offset, size = _dat_layout(data, path)
    if sensor_size is not None:
        size = tuple(sensor_size)
    rec = body_as(data, offset, DAT_EVENT, path, "DAT events")
    v = rec["xyp"]
    x = (v & 0x3FFF).astype(np.uint16)
    y = ((v >> 14) & 0x3FFF).astype(np.uint16)
    p = (v >> 28).astype(np.uint8)
    return Recording(finish_events(path, x, y, rec["t"].astype(np.int64), p, size), size)


def memmap_prophesee_dat(path) -> tuple[np.memmap, SensorSize | None]:
    """Memory-map the raw (t, xyp) records of a DAT file (for windowed reads of long Gen1 files)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    offset, size = _dat_layout(head, path)
    nbytes = os.path.getsize(path) - offset
    if nbytes % DAT_EVENT.itemsize:
        raise EventFileError(path, f"truncated: {nbytes} bytes of DAT events is not a multiple of 8")
    if nbytes == 0:
        raise EventFileError(path, "contains no events (empty event stream)")
    return np.memmap(path, dtype=DAT_EVENT, mode="r", offset=offset), size


def decode_dat_records(rec: np.ndarray, path=None, sensor_size: SensorSize | None = None) -> np.ndarray:
    """Turn raw (t, xyp) DAT records into an event array (validated like a file read)."""
    v = np.asarray(rec["xyp"])
    return finish_events(
        path,
        (v & 0x3FFF).astype(np.uint16),
        ((v >> 14) & 0x3FFF).astype(np.uint16),
        np.asarray(rec["t"]).astype(np.int64),
        (v >> 28).astype(np.uint8),
        sensor_size,
        allow_empty=True,
    )


def write_prophesee_dat(
    path, events: np.ndarray, sensor_size: SensorSize | None = None, event_type: int = EVENT_TYPE_2D
) -> None:
    """Write events as a Prophesee DAT v2 file (t must fit uint32, x/y 14 bits); ``event_type`` 0
    (Event2D, Gen1) or 12 (EventCD, Metavision / 1-Megapixel)."""
    if event_type not in DAT_2D_TYPES:
        raise ValueError(f"event_type must be one of {sorted(DAT_2D_TYPES)}, got {event_type}")
    x, y = events["x"].astype(np.uint32), events["y"].astype(np.uint32)
    if x.size and (x.max() >= 1 << 14 or y.max() >= 1 << 14):
        raise ValueError("DAT coordinates must be < 16384")
    rec = np.empty(x.size, DAT_EVENT)
    rec["t"] = events["t"]
    rec["xyp"] = x | (y << 14) | (events["p"].astype(np.uint32) << 28)
    head = f"% Data file containing {DAT_2D_TYPES[event_type]} events.\n% Version 2\n"
    if sensor_size is not None:
        head += f"% Height {sensor_size[1]}\n% Width {sensor_size[0]}\n"
    with open(os.fspath(path), "wb") as f:
        f.write(head.encode() + bytes([event_type, DAT_EVENT.itemsize]) + rec.tobytes())


MAX_BOX_CLASS = 255
MAX_BOX_COORD = 1e6  # pixels; boxes may stick out of the frame a little, not by millions


def _read_npy_structured(path: str) -> np.ndarray:
    """A 1-D structured array from a ``.npy`` file, validated before anything is allocated: the
    header's dtype must hold only integer/float fields and its row count must match the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(min(size, 1 << 16))
        if head[:2] == b"PK":
            raise EventFileError(path, "is a .npz archive, not a .npy box array")
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise EventFileError(path, f"not a .npy file (starts with {head[:8]!r})")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except Exception as e:  # numpy's header parser raises many kinds on malformed text
            raise EventFileError(path, f"corrupt .npy header ({type(e).__name__}: {str(e)[:200]})") from None
        offset = f.tell()
    if dtype.names is None or len(shape) != 1 or fortran:
        raise EventFileError(
            path, f"not a Gen1 box array: needs a 1-D structured array, header says {dtype} {shape}"
        )
    for name in dtype.names:
        sub = dtype.fields[name][0]
        if sub.kind not in "iuf" or sub.shape:
            raise EventFileError(
                path, f"box field {name!r} has type {sub}; only integer and float fields are allowed"
            )
    rows = int(shape[0])
    if dtype.itemsize == 0 or rows * dtype.itemsize != size - offset:
        raise EventFileError(
            path,
            f"header declares {rows} rows of {dtype.itemsize} bytes but the file holds "
            f"{size - offset} bytes after the header (truncated or padded)",
        )
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return np.frombuffer(data, dtype=dtype, count=rows)


def _check_box_values(path, arr: np.ndarray, src: dict) -> None:
    def col(name):
        return arr[src[name]]

    for name in ("x", "y", "w", "h") + (("confidence",) if "confidence" in src else ()):
        v = col(name)
        if v.size and not np.all(np.isfinite(v.astype(np.float64))):
            raise EventFileError(path, f"box field {name!r} holds NaN or infinite values")
        if v.size and float(np.abs(v.astype(np.float64)).max()) > MAX_BOX_COORD:
            raise EventFileError(path, f"box field {name!r} has a value beyond {MAX_BOX_COORD:g}")
    for name in ("w", "h"):
        if col(name).size and float(col(name).min()) < 0:
            raise EventFileError(path, f"box field {name!r} is negative ({float(col(name).min())})")
    for name, hi in (("ts", 2**62), ("class_id", MAX_BOX_CLASS), ("track_id", 2**32 - 1)):
        if name not in src or not col(name).size:
            continue
        v = col(name).astype(np.float64) if col(name).dtype.kind == "f" else col(name)
        if v.dtype.kind == "f" and not np.all(np.isfinite(v) & (v == np.floor(v))):
            raise EventFileError(path, f"box field {name!r} holds non-integer values")
        lo_v, hi_v = float(v.min()), float(v.max())
        if lo_v < 0 or hi_v > hi:
            raise EventFileError(
                path, f"box field {name!r} has values in [{lo_v:g}, {hi_v:g}], outside 0..{hi}"
            )


def read_gen1_boxes(path) -> np.ndarray:
    """Read a Gen1 ``*_bbox.npy`` box file as a structured array with fields ``BOX_DTYPE``.

    Older files name the timestamp ``t``; it is returned as ``ts``. Missing ``confidence`` /
    ``track_id`` are filled with 1.0 / 0. Boxes are sorted by ``ts`` (stable). Every value is
    range-checked before the cast (class ids 0..255, ``ts`` and ids >= 0, finite coordinates,
    sizes >= 0); any fault raises :class:`EventFileError`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EventFileError(path, "no such file")
    arr = _read_npy_structured(path)
    names = arr.dtype.names or ()
    src = {n: n for n in names}
    if "ts" not in src and "t" in src:
        src["ts"] = "t"
    missing = [f for f in BOX_FIELDS if f not in src]
    if missing:
        raise EventFileError(
            path,
            f"not a Gen1 box array: needs a 1-D structured array with fields {BOX_FIELDS}, missing {missing}",
        )
    _check_box_values(path, arr, src)
    out = np.zeros(arr.shape[0], BOX_DTYPE)
    for f in BOX_DTYPE.names:
        if f in src:
            out[f] = arr[src[f]]
        elif f == "confidence":
            out[f] = 1.0
    if out.size and np.any(out["ts"][1:] < out["ts"][:-1]):
        out = out[np.argsort(out["ts"], kind="stable")]
    return out


def write_gen1_boxes(path, boxes: np.ndarray) -> None:
    """Save boxes (any structured array with at least ``BOX_FIELDS``) as a Gen1 ``.npy`` file."""
    out = np.zeros(boxes.shape[0], BOX_DTYPE)
    for f in BOX_DTYPE.names:
        if f in (boxes.dtype.names or ()):
            out[f] = boxes[f]
    np.save(os.fspath(path), out, allow_pickle=False)
