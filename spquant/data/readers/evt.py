"""Metavision ``.raw`` files (Prophesee EVK / IMX636 / GenX320 cameras): EVT 2.0 and EVT 3.0.

A RAW file is a text header of lines starting with ``%`` and ending with the line ``% end``
(``% evt 2.0`` / ``% evt 3.0`` or ``% format EVT2;height=720;width=1280`` name the encoding;
``% geometry 1280x720`` or the ``format`` line give the sensor size), then the little-endian word
stream the camera produced. Decoding follows Prophesee's public format description:

* **EVT 2.0** -- 32-bit words, type in bits 31-28. ``CD_OFF`` (0) / ``CD_ON`` (1): timestamp bits 0-5
  in bits 27-22, x in bits 21-11, y in bits 10-0, polarity = the type. ``EVT_TIME_HIGH`` (8): bits
  27-0 are timestamp bits 6-33. Other types (triggers, extensions) are skipped.
* **EVT 3.0** -- 16-bit words, type in bits 15-12, decoded against a state: ``EVT_ADDR_Y`` (0) sets y
  (bits 10-0); ``EVT_ADDR_X`` (2) is one event at x = bits 10-0, polarity bit 11; ``VECT_BASE_X``
  (3) sets a base x and polarity; ``VECT_12`` (4) / ``VECT_8`` (5) are 12 / 8 validity bits for
  pixels base_x + i (bit i), after which base_x advances by 12 / 8; ``EVT_TIME_LOW`` (6) and
  ``EVT_TIME_HIGH`` (8) set the low and high 12 bits of a 24-bit microsecond time base (a decrease of
  the high part is a wrap of the 24-bit counter, unrolled). Other types are skipped.

Events before the first time-high word (and, in EVT 3.0, before the first y address) have no
defined timestamp or row and are dropped, as Metavision's decoders do. Decoding is vectorised:
forward-filled state arrays, no Python loop over words.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "rec.raw")
>>> write_evt3_raw(p, make_events([5, 6], [7, 7], [100, 4200], [1, 0]), (640, 480))
>>> read_metavision_raw(p).events[["x", "y", "t", "p"]].tolist()
[(5, 7, 100, 1), (6, 7, 4200, 0)]
"""

from __future__ import annotations

import os

import numpy as np

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events
from spquant.data.readers._io import read_bytes

MAX_HEADER_BYTES = 1 << 20
ENCODINGS = ("evt2", "evt3")


def _parse_header(data: bytes, path) -> tuple[dict[str, str], int]:
    """``%`` header lines -> ({key: value}, offset of the word stream)."""
    info: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] == b"%":
        end = data.find(b"\n", pos, pos + MAX_HEADER_BYTES)
        if end < 0:
            raise EventFileError(path, "RAW header line without line end (file truncated inside the header)")
        line = data[pos:end].rstrip(b"\r").decode("latin-1")
        pos = end + 1
        body = line[1:].strip()
        if body == "end":
            return info, pos
        key, _, value = body.partition(" ")
        if key:
            info[key.lower()] = value.strip()
    if not info:
        raise EventFileError(path, "not a Metavision RAW file: no '%' header lines")
    return info, pos


def raw_encoding_and_size(info: dict[str, str], path) -> tuple[str, SensorSize | None]:
    """The encoding ('evt2' / 'evt3') and sensor size (W, H) or None named by a RAW header."""
    fmt = info.get("format", "")
    fields = dict(kv.split("=", 1) for kv in fmt.split(";")[1:] if "=" in kv)
    name = (fmt.split(";")[0] or info.get("evt", "")).strip().lower().replace(" ", "")
    encoding = {
        "evt2": "evt2",
        "2.0": "evt2",
        "evt2.0": "evt2",
        "evt3": "evt3",
        "3.0": "evt3",
        "evt3.0": "evt3",
    }.get(name)
    if encoding is None:
        raise EventFileError(
            path,
            f"RAW header names no supported encoding (format {fmt!r}, evt "
            f"{info.get('evt')!r}); readable: EVT 2.0, EVT 3.0",
        )
    size = None
    try:
        if "width" in fields and "height" in fields:
            size = (int(fields["width"]), int(fields["height"]))
        elif "geometry" in info:
            w, h = info["geometry"].lower().split("x")
            size = (int(w), int(h))
    except ValueError:
        raise EventFileError(
            path, f"bad sensor size in the RAW header (format {fmt!r}, geometry {info.get('geometry')!r})"
        ) from None
    if size is not None and not (0 < size[0] <= 2048 and 0 < size[1] <= 2048):
        raise EventFileError(
            path,
            f"sensor size {size[0]}x{size[1]} in the RAW header exceeds the 2048x2048 "
            "that EVT 2.0 / 3.0 can address",
        )
    return encoding, size


def _forward_fill(valid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every position: the value at the last ``valid`` position at or before it, and whether one exists."""
    idx = np.where(valid, np.arange(valid.size), -1)
    np.maximum.accumulate(idx, out=idx)
    has = idx >= 0
    return values[np.maximum(idx, 0)], has


def _unwrap(high: np.ndarray, is_high: np.ndarray, period: int) -> np.ndarray:
    """Add ``period`` for every decrease along the sequence of time-high words."""
    h = high[is_high].astype(np.int64)
    wraps = np.zeros(h.size, np.int64)
    if h.size > 1:
        wraps[1:] = np.cumsum(h[1:] < h[:-1])
    out = np.zeros(high.size, np.int64)
    out[is_high] = h + wraps * period
    return out


def decode_evt2(words: np.ndarray, path=None, sensor_size: SensorSize | None = None) -> np.ndarray:
    """EVT 2.0 words (uint32) -> event array."""
    w = np.asarray(words, dtype=np.uint32)
    typ = w >> 28
    is_high = typ == 8
    high = _unwrap((w & 0x0FFFFFFF).astype(np.int64), is_high, 1 << 28)
    high_ff, has_high = _forward_fill(is_high, high)
    cd = (typ <= 1) & has_high
    wc = w[cd]
    t = (high_ff[cd] << 6) | ((wc >> 22) & 0x3F).astype(np.int64)
    x = ((wc >> 11) & 0x7FF).astype(np.uint16)
    y = (wc & 0x7FF).astype(np.uint16)
    p = typ[cd].astype(np.uint8)
    return finish_events(path, x, y, t, p, sensor_size, allow_empty=True)


def decode_evt3(words: np.ndarray, path=None, sensor_size: SensorSize | None = None) -> np.ndarray:
    """EVT 3.0 words (uint16) -> event array."""
    w = np.asarray(words, dtype=np.uint16).astype(np.int64)
    typ = w >> 12
    payload = w & 0xFFF
    y_ff, has_y = _forward_fill(typ == 0, w & 0x7FF)
    is_high = typ == 8
    high_ff, has_high = _forward_fill(is_high, _unwrap(payload, is_high, 1 << 12))
    low_ff, has_low = _forward_fill(typ == 6, payload)
    low_ff = np.where(has_low, low_ff, 0)
    t_all = (high_ff << 12) | low_ff
    ok = has_y & has_high

    single = (typ == 2) & ok
    xs, ps = w[single] & 0x7FF, (w[single] >> 11) & 1
    pos_s = np.flatnonzero(single)

    is_base = typ == 3
    inc = np.where(typ == 4, 12, np.where(typ == 5, 8, 0))
    csum = np.cumsum(inc)
    base_val = (w & 0x7FF) - csum  # base x relative to the running vector offset
    base_ff, has_base = _forward_fill(is_base, base_val)
    pol_ff, _ = _forward_fill(is_base, (w >> 11) & 1)
    vec = (inc > 0) & has_base & ok
    pos_v = np.flatnonzero(vec)
    x0 = base_ff[vec] + csum[vec] - inc[vec]
    nbits = inc[vec]
    bits = ((payload[vec][:, None] >> np.arange(12)) & 1).astype(bool) & (np.arange(12) < nbits[:, None])
    row, col = np.nonzero(bits)

    pos = np.concatenate([pos_s, pos_v[row]])
    order = np.argsort(pos * 16 + np.concatenate([np.zeros(pos_s.size, np.int64), col]), kind="stable")
    x = np.concatenate([xs, x0[row] + col])[order]
    p = np.concatenate([ps, pol_ff[vec][row]])[order]
    pos = pos[order]
    if x.size and int(x.max()) > 0x7FF:
        raise EventFileError(
            path, f"EVT 3.0 vector runs past x = 2047 (max x {int(x.max())}): corrupt stream"
        )
    return finish_events(
        path,
        x.astype(np.uint16),
        y_ff[pos].astype(np.uint16),
        t_all[pos],
        p.astype(np.uint8),
        sensor_size,
        allow_empty=True,
    )


def read_metavision_raw(path, sensor_size: SensorSize | None = None) -> Recording:
    """Read a Metavision ``.raw`` file (EVT 2.0 or EVT 3.0, named by its header) into events.

    ``sensor_size`` overrides the header's size for the bounds check.
    """
    data = read_bytes(path)
    info, offset = _parse_header(data, path)
    encoding, size = raw_encoding_and_size(info, path)
    if sensor_size is not None:
        size = tuple(sensor_size)
    word = np.dtype("<u4" if encoding == "evt2" else "<u2")
    nbytes = len(data) - offset
    if nbytes % word.itemsize:
        raise EventFileError(
            path,
            f"truncated: {nbytes} bytes of {encoding.upper()} data is not a multiple of the "
            f"{word.itemsize}-byte word",
        )
    words = np.frombuffer(data, dtype=word, offset=offset)
    decode = decode_evt2 if encoding == "evt2" else decode_evt3
    events = decode(words, path, size)
    if events.size == 0:
        raise EventFileError(path, f"contains no CD events ({words.size} {encoding.upper()} words)")
    return Recording(events, size)


def _header(encoding: str, sensor_size: SensorSize) -> bytes:
    w, h = int(sensor_size[0]), int(sensor_size[1])
    version = "2.0" if encoding == "evt2" else "3.0"
    return (
        f"% camera_integrator_name spquant\n% evt {version}\n% format {encoding.upper()};height={h};width={w}\n"
        f"% geometry {w}x{h}\n% end\n"
    ).encode()


def _check_writable(events: np.ndarray, sensor_size: SensorSize) -> None:
    if events.size and (int(events["x"].max()) >= sensor_size[0] or int(events["y"].max()) >= sensor_size[1]):
        raise ValueError(f"events do not fit the sensor {sensor_size[0]}x{sensor_size[1]}")
    if events.size and (int(events["t"].min()) < 0 or np.any(np.diff(events["t"]) < 0)):
        raise ValueError("events must be sorted by t >= 0")


def write_evt2_raw(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """Write events as an EVT 2.0 ``.raw`` file (a time-high word whenever bits 6-33 of t change)."""
    _check_writable(events, sensor_size)
    t = events["t"].astype(np.int64)
    high = (t >> 6) & 0x0FFFFFFF
    new_high = np.ones(t.size, bool)
    new_high[1:] = high[1:] != high[:-1]
    cd = (
        (events["p"].astype(np.uint32) << 28)
        | ((t & 0x3F).astype(np.uint32) << 22)
        | (events["x"].astype(np.uint32) << 11)
        | events["y"].astype(np.uint32)
    )
    pairs = np.stack([(8 << 28) | high.astype(np.uint32), cd], axis=1)
    keep = np.stack([new_high, np.ones(t.size, bool)], axis=1)
    with open(os.fspath(path), "wb") as f:
        f.write(_header("evt2", sensor_size) + pairs[keep].astype("<u4").tobytes())


def write_evt3_raw(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """Write events as an EVT 3.0 ``.raw`` file of single-event words (no vectors): time-high,
    time-low and y-address words only where they change, then one ``EVT_ADDR_X`` per event."""
    _check_writable(events, sensor_size)
    t = events["t"].astype(np.int64)
    high, low = (t >> 12) & 0xFFF, t & 0xFFF
    y = events["y"].astype(np.int64)

    def changed(a):
        c = np.ones(a.size, bool)
        c[1:] = a[1:] != a[:-1]
        return c

    new_high = changed(t >> 12)
    new_low = new_high | changed(low)
    new_y = changed(y)
    words = np.stack(
        [
            (8 << 12) | high,
            (6 << 12) | low,
            y,
            (2 << 12) | (events["p"].astype(np.int64) << 11) | events["x"].astype(np.int64),
        ],
        axis=1,
    )
    keep = np.stack([new_high, new_low, new_y, np.ones(t.size, bool)], axis=1)
    with open(os.fspath(path), "wb") as f:
        f.write(_header("evt3", sensor_size) + words[keep].astype("<u2").tobytes())
