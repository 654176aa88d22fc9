"""Event-file readers (and writers for tests and users). One entry point: :func:`read_events`.

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> p = os.path.join(tempfile.mkdtemp(), "digit.bin")
>>> write_atis_bin(p, make_events([1], [2], [3], [1]))
>>> read_events(p)["t"].tolist()
[3]
"""

from __future__ import annotations

import os

import numpy as np

from spquant.data.events import EventFileError, Recording
from spquant.data.readers.aedat2 import read_aedat2, write_aedat2
from spquant.data.readers.aedat3 import (
    read_aedat31,
    read_gesture_labels,
    split_gesture_segments,
    write_aedat31,
)
from spquant.data.readers.aedat4 import read_aedat4
from spquant.data.readers.atis import read_atis_bin, write_atis_bin
from spquant.data.readers.evt import read_metavision_raw, write_evt2_raw, write_evt3_raw
from spquant.data.readers.prophesee import (
    decode_dat_records,
    memmap_prophesee_dat,
    read_gen1_boxes,
    read_prophesee_dat,
    write_gen1_boxes,
    write_prophesee_dat,
)


def detect_format(path) -> str:
    """Name the format of an event file from its first bytes (then its extension).

    Returns one of 'aedat2', 'aedat31', 'aedat4', 'prophesee_dat', 'metavision_raw', 'atis_bin'.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EventFileError(path, "no such file")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"#!AER-DAT2"):
        return "aedat2"
    if head.startswith(b"#!AER-DAT3"):
        return "aedat31"
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"#!AER-DAT"):
        version = head.splitlines()[0] if head.splitlines() else head
        raise EventFileError(path, f"unsupported AEDAT version {version!r} (supported: 2.0, 3.1, 4.0)")
    ext = os.path.splitext(path)[1].lower()
    if head.startswith(b"%"):
        raw_like = b"\n% end" in head and (b"% evt " in head or b"% format EVT" in head)
        return "metavision_raw" if ext == ".raw" or (ext != ".dat" and raw_like) else "prophesee_dat"
    if ext == ".bin":
        return "atis_bin"
    if ext == ".dat":
        return "prophesee_dat"
    if ext in (".aedat", ".aedat4"):
        raise EventFileError(path, "AEDAT file without a '#!AER-DAT' version line")
    raise EventFileError(
        path, f"cannot tell the event format from the header {head[:8]!r} or the extension {ext!r}"
    )


_READERS = {
    "aedat2": read_aedat2,
    "aedat31": read_aedat31,
    "aedat4": read_aedat4,
    "prophesee_dat": read_prophesee_dat,
    "metavision_raw": read_metavision_raw,
    "atis_bin": read_atis_bin,
}


def read_recording(path, **kwargs) -> Recording:
    """Like :func:`read_events` but returns ``Recording(events, sensor_size)``."""
    return _READERS[detect_format(path)](path, **kwargs)


def read_events(path, **kwargs) -> np.ndarray:
    """Read any supported event file into an event array (format picked from header, then extension).

    Keyword arguments go to the format's reader (e.g. ``sensor_size=(34, 34)`` for ATIS ``.bin``,
    ``layout='davis346'`` for AEDAT 2.0).
    """
    return read_recording(path, **kwargs).events


__all__ = [
    "detect_format",
    "read_events",
    "read_recording",
    "read_atis_bin",
    "write_atis_bin",
    "read_aedat2",
    "write_aedat2",
    "read_aedat31",
    "write_aedat31",
    "read_gesture_labels",
    "split_gesture_segments",
    "read_aedat4",
    "read_prophesee_dat",
    "write_prophesee_dat",
    "memmap_prophesee_dat",
    "decode_dat_records",
    "read_gen1_boxes",
    "write_gen1_boxes",
    "read_metavision_raw",
    "write_evt2_raw",
    "write_evt3_raw",
]
