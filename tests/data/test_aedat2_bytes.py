"""AEDAT 2.0 addresses decoded from bytes written by hand (not by the library's writer)."""

import struct

from spquant.data.readers.aedat2 import read_aedat2


def _file(tmp_path, name, events):
    body = b"".join(struct.pack(">II", addr, t) for addr, t in events)
    path = tmp_path / name
    path.write_bytes(b"#!AER-DAT2.0\r\n# hand-written\r\n" + body)
    return path


def test_dvs128_addresses_and_external_events(tmp_path):
    # DVS128: p = bit 0, x = bits 1-7, y = bits 8-14, bit 31 = external event (dropped)
    events = [
        ((9 << 8) | (5 << 1) | 1, 10),  # x 5, y 9, ON
        ((127 << 8) | (0 << 1) | 0, 20),  # x 0, y 127, OFF
        ((1 << 31) | (3 << 8) | (3 << 1), 30),  # external: dropped
        ((2 << 8) | (127 << 1) | 1, 40),  # x 127, y 2, ON
    ]
    ev = read_aedat2(_file(tmp_path, "d.aedat", events)).events
    assert ev[["x", "y", "t", "p"]].tolist() == [(5, 9, 10, 1), (0, 127, 20, 0), (127, 2, 40, 1)]


def test_davis346_drops_aps_imu_and_external_events(tmp_path):
    # DAVIS: p = bit 11, x = bits 12-21, y = bits 22-30; bit 31 = APS/IMU sample, bit 10 = external
    def dvs(x, y, p):
        return (y << 22) | (x << 12) | (p << 11)

    events = [
        (dvs(345, 259, 1), 1),
        (dvs(17, 4, 0), 2),
        (dvs(17, 4, 0) | (1 << 10), 3),  # external event: dropped
        (dvs(100, 100, 1) | (1 << 31), 4),  # APS sample: dropped
        (dvs(0, 0, 1), 5),
    ]
    ev = read_aedat2(_file(tmp_path, "d346.aedat", events), layout="davis346").events
    assert ev[["x", "y", "t", "p"]].tolist() == [(345, 259, 1, 1), (17, 4, 2, 0), (0, 0, 5, 1)]


def test_timestamp_wraparound_unrolled(tmp_path):
    events = [(1 << 1, 2**32 - 10), (2 << 1, 5)]  # the 32-bit counter wrapped between the two
    ev = read_aedat2(_file(tmp_path, "w.aedat", events)).events
    assert ev["t"].tolist() == [2**32 - 10, 2**32 + 5]
