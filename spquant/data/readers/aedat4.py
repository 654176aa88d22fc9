"""AEDAT 4 files (iniVation DV) through the optional ``aedat`` package (``pip install spquant[aedat]``).

Reads every event packet of the file's first event stream (or ``stream_id``); the sensor size comes
from the stream description. The header and packet lengths are checked against the file size
before the decoder runs.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events

MAGIC = b"#!AER-DAT4.0"
# the Rust decoder signals corrupt input with pyo3's PanicException, a BaseException subclass
_DECODER_ERRORS = BaseException


def _import_aedat():
    try:
        import aedat  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            "reading AEDAT 4 files needs the optional 'aedat' package: pip install spquant[aedat] "
            "(or pip install aedat)"
        ) from e
    return aedat


def _io_header_fields(head: bytes) -> tuple[int, bytes | None]:
    """(``dataTablePosition`` or -1, ``infoNode`` bytes or None) of the IOHeader flatbuffer;
    struct.error when an offset points outside it."""
    root = struct.unpack_from("<I", head, 0)[0]
    vtable = root - struct.unpack_from("<i", head, root)[0]
    if vtable < 0:
        raise struct.error("vtable outside the header")
    vt_size = struct.unpack_from("<H", head, vtable)[0]
    fields = [
        struct.unpack_from("<H", head, vtable + 4 + 2 * i)[0] for i in range(max(0, (vt_size - 4) // 2))
    ]
    table = struct.unpack_from("<q", head, root + fields[1])[0] if len(fields) > 1 and fields[1] else -1
    info = None
    if len(fields) > 2 and fields[2]:  # field 2: infoNode, a string (uint32 length, bytes)
        at = root + fields[2]
        start = at + struct.unpack_from("<I", head, at)[0]
        n = struct.unpack_from("<I", head, start)[0]
        if start + 4 + n > len(head):
            raise struct.error("infoNode string runs past the header")
        info = head[start + 4 : start + 4 + n]
    return table, info


def _check_layout(path: str) -> None:
    """Walk the file's length fields before the decoder does: the IOHeader length and every
    packet's size must fit the file (a corrupt length would make the decoder allocate it)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read()
    start = len(MAGIC) + 2  # magic and CR LF
    if size < start + 4 or data[len(MAGIC) : start] != b"\r\n":
        raise EventFileError(path, "truncated AEDAT 4 file: no header length after the version line")
    hlen = struct.unpack_from("<I", data, start)[0]
    pos = start + 4 + hlen
    if pos > size:
        raise EventFileError(path, f"AEDAT 4 header length {hlen} runs past the end of the {size}-byte file")
    try:
        table, info = _io_header_fields(data[start + 4 : pos])
    except struct.error:
        raise EventFileError(path, "corrupt AEDAT 4 header (its offsets point outside it)") from None
    try:  # the decoder hands the stream description to Python as text (and aborts if it is not UTF-8)
        if info is not None:
            info.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EventFileError(
            path, f"corrupt AEDAT 4 header: the stream description is not UTF-8 (byte {e.start})"
        ) from None
    end = table if pos <= table <= size else size
    while pos < end:
        if end - pos < 8:
            raise EventFileError(path, f"truncated AEDAT 4 packet header at offset {pos}")
        plen = struct.unpack_from("<I", data, pos + 4)[0]
        if plen > end - pos - 8:
            raise EventFileError(
                path,
                f"AEDAT 4 packet at offset {pos} declares {plen} bytes, only {end - pos - 8} "
                "are left (corrupt length or truncated file)",
            )
        pos += 8 + plen


def read_aedat4(path, stream_id: int | None = None, sensor_size: SensorSize | None = None) -> Recording:
    """Read the polarity events of an AEDAT 4 file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EventFileError(path, "no such file")
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise EventFileError(path, f"not an AEDAT 4 file: it must start with {MAGIC.decode()!r}")
    aedat = _import_aedat()
    _check_layout(path)
    try:
        decoder = aedat.Decoder(path)
        streams = decoder.id_to_stream()
    except _DECODER_ERRORS as e:  # the Rust decoder raises plain exceptions or pyo3 panics
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise EventFileError(path, f"cannot decode the AEDAT 4 header ({e})") from None
    event_streams = {k: v for k, v in streams.items() if v.get("type") == "events"}
    if not event_streams:
        raise EventFileError(path, "AEDAT 4 file has no event stream")
    sid = min(event_streams) if stream_id is None else stream_id
    if sid not in event_streams:
        raise EventFileError(path, f"no event stream with id {sid}; event streams: {sorted(event_streams)}")
    desc = event_streams[sid]
    size = tuple(sensor_size) if sensor_size is not None else (int(desc["width"]), int(desc["height"]))
    chunks = []
    try:
        for packet in decoder:
            if packet["stream_id"] == sid and "events" in packet:
                chunks.append(packet["events"])
    except _DECODER_ERRORS as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise EventFileError(path, f"corrupt or truncated AEDAT 4 packet ({e})") from None
    if chunks:
        ev = np.concatenate(chunks)
        x, y, t, p = ev["x"], ev["y"], ev["t"].astype(np.int64), ev["on"].astype(np.uint8)
    else:
        x = y = np.zeros(0, np.uint16)
        t, p = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return Recording(finish_events(path, x, y, t, p, size), size)
