"""Readers: real recordings (exact counts from ../shared/data/README.md) and self-written files in
every format, including malformed ones."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import spquant.data as sd
from spquant.data import EVENT_DTYPE, EventFileError
from spquant.data.readers import aedat2, aedat3, prophesee

from .helpers import random_events


def same(a, b):
    assert a.dtype == EVENT_DTYPE and b.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- real recordings
def test_real_nmnist(shared_events):
    rec = sd.read_atis_bin(shared_events / "sample_nmnist.bin", sensor_size=(34, 34))
    ev = rec.events
    assert ev.dtype == EVENT_DTYPE
    assert ev.size == 4325
    assert (int(ev["t"][0]), int(ev["t"][-1])) == (654, 311175)
    assert ev["x"].max() < 34 and ev["y"].max() < 34
    assert np.all(np.diff(ev["t"]) >= 0)
    assert set(np.unique(ev["p"])) == {0, 1}
    same(sd.read_events(shared_events / "sample_nmnist.bin"), ev)


def test_real_ncars(shared_events):
    rec = sd.read_prophesee_dat(shared_events / "sample_ncars.dat")
    ev = rec.events
    assert ev.size == 2009
    assert int(ev["t"][-1] - ev["t"][0]) == 99952
    assert ev["x"].max() < 78 and ev["y"].max() < 42
    assert ev["x"].max() == 77 and ev["y"].max() == 41
    assert rec.sensor_size == (304, 240)
    assert sd.detect_format(shared_events / "sample_ncars.dat") == "prophesee_dat"


@pytest.mark.parametrize(
    "name,count,size,span_s",
    [("sample.aedat4", 111954, (320, 240), 0.59), ("davis346.aedat4", 78830, (346, 260), 2.36)],
)
def test_real_aedat4(shared_events, name, count, size, span_s):
    pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")
    rec = sd.read_aedat4(shared_events / name)
    ev = rec.events
    assert ev.size == count
    assert rec.sensor_size == size
    assert ev["x"].max() < size[0] and ev["y"].max() < size[1]
    assert abs((ev["t"][-1] - ev["t"][0]) * 1e-6 - span_s) < 0.006
    assert np.all(np.diff(ev["t"]) >= 0)
    assert sd.detect_format(shared_events / name) == "aedat4"


# ---------------------------------------------------------------- ATIS .bin
def test_atis_round_trip(tmp_path, rng):
    ev = random_events(rng, 500, 34, 34, t_max=300_000)
    sd.write_atis_bin(tmp_path / "a.bin", ev)
    assert (tmp_path / "a.bin").stat().st_size == 5 * 500
    same(sd.read_atis_bin(tmp_path / "a.bin", sensor_size=(34, 34)).events, ev)


def test_atis_hand_bytes(tmp_path):
    # x=3, y=4, ON, t=0x012345 ; x=5, y=6, OFF, t=0x7FFFFF
    (tmp_path / "h.bin").write_bytes(bytes([3, 4, 0x80 | 0x01, 0x23, 0x45, 5, 6, 0x7F, 0xFF, 0xFF]))
    ev = sd.read_atis_bin(tmp_path / "h.bin").events
    assert ev.tolist() == [(3, 4, 0x012345, 1), (5, 6, 0x7FFFFF, 0)]


def test_atis_overflow_markers(tmp_path):
    # an overflow marker (y == 240) adds 2**13 us to all later events and is dropped
    raw = bytes([1, 1, 0, 0, 10]) + bytes([0, 240, 0, 0, 0]) + bytes([2, 2, 0x80, 0, 5])
    (tmp_path / "o.bin").write_bytes(raw)
    ev = sd.read_atis_bin(tmp_path / "o.bin").events
    assert ev.tolist() == [(1, 1, 10, 0), (2, 2, 5 + 8192, 1)]
    # writer inserts markers for long recordings and the reader restores the times
    ev2 = sd.make_events([0, 1, 2], [0, 1, 2], [5, 2**23 + 100, 2**23 + 50_000], [1, 0, 1])
    sd.write_atis_bin(tmp_path / "long.bin", ev2)
    same(sd.read_atis_bin(tmp_path / "long.bin").events, ev2)


def test_atis_errors(tmp_path):
    (tmp_path / "t.bin").write_bytes(bytes(12))
    with pytest.raises(EventFileError, match=r"t\.bin.*truncated.*5-byte"):
        sd.read_atis_bin(tmp_path / "t.bin")
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(EventFileError, match=r"e\.bin.*no events"):
        sd.read_atis_bin(tmp_path / "e.bin")
    (tmp_path / "big.bin").write_bytes(bytes([40, 3, 0, 0, 1]))
    with pytest.raises(EventFileError, match=r"big\.bin.*outside the declared sensor size 34x34"):
        sd.read_atis_bin(tmp_path / "big.bin", sensor_size=(34, 34))
    with pytest.raises(EventFileError, match="no such file"):
        sd.read_atis_bin(tmp_path / "missing.bin")


# ---------------------------------------------------------------- AEDAT 2.0
@pytest.mark.parametrize("layout", ["dvs128", "davis240", "davis346"])
def test_aedat2_round_trip(tmp_path, rng, layout):
    w, h = aedat2.LAYOUTS[layout]
    ev = random_events(rng, 300, w, h)
    sd.write_aedat2(tmp_path / "a.aedat", ev, layout=layout)
    rec = sd.read_aedat2(tmp_path / "a.aedat", layout=layout)
    assert rec.sensor_size == (w, h)
    same(rec.events, ev)
    assert sd.detect_format(tmp_path / "a.aedat") == "aedat2"


def test_aedat2_hand_bytes_and_special_events(tmp_path):
    import struct

    body = struct.pack(">II", (1 << 0) | (5 << 1) | (9 << 8), 1000)  # ON x=5 y=9
    body += struct.pack(">II", 1 << 31, 1500)  # external event: dropped
    body += struct.pack(">II", (3 << 1) | (4 << 8), 2000)  # OFF x=3 y=4
    (tmp_path / "h.aedat").write_bytes(b"#!AER-DAT2.0\r\n# comment\r\n" + body)
    assert sd.read_events(tmp_path / "h.aedat").tolist() == [(5, 9, 1000, 1), (3, 4, 2000, 0)]
    # DAVIS: APS sample (bit 31) dropped, timestamp wrap unrolled
    body = struct.pack(">II", (1 << 11) | (300 << 12) | (200 << 22), 2**32 - 10)
    body += struct.pack(">II", (1 << 31) | 5, 2**32 - 5)
    body += struct.pack(">II", (0 << 11) | (1 << 12) | (2 << 22), 20)
    (tmp_path / "d.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + body)
    ev = sd.read_aedat2(tmp_path / "d.aedat", layout="davis346").events
    assert ev.tolist() == [(300, 200, 2**32 - 10, 1), (1, 2, 2**32 + 20, 0)]


def test_aedat2_errors(tmp_path):
    (tmp_path / "m.aedat").write_bytes(b"#!AER-DAT9.9\r\n" + bytes(8))
    with pytest.raises(EventFileError, match=r"m\.aedat.*unsupported AEDAT version"):
        sd.read_events(tmp_path / "m.aedat")
    with pytest.raises(EventFileError, match=r"m\.aedat.*not an AEDAT 2.0 file"):
        sd.read_aedat2(tmp_path / "m.aedat")
    (tmp_path / "t.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + bytes(13))
    with pytest.raises(EventFileError, match=r"t\.aedat.*truncated.*8-byte"):
        sd.read_aedat2(tmp_path / "t.aedat")
    (tmp_path / "e.aedat").write_bytes(b"#!AER-DAT2.0\r\n")
    with pytest.raises(EventFileError, match="no events"):
        sd.read_aedat2(tmp_path / "e.aedat")
    # x = 300 in a DAVIS240 (240x180) address
    import struct

    (tmp_path / "o.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + struct.pack(">II", 300 << 12, 1))
    with pytest.raises(EventFileError, match="outside the declared sensor size 240x180"):
        sd.read_aedat2(tmp_path / "o.aedat", layout="davis240")
    with pytest.raises(ValueError, match="unknown AEDAT 2.0 address layout"):
        sd.read_aedat2(tmp_path / "o.aedat", layout="dvs999")


# ---------------------------------------------------------------- AEDAT 3.1
def test_aedat31_round_trip_and_packets(tmp_path, rng):
    ev = random_events(rng, 1000, 128, 128, t_max=5_000_000)
    sd.write_aedat31(tmp_path / "g.aedat", ev, packet_size=128)
    rec = sd.read_aedat31(tmp_path / "g.aedat")
    assert rec.sensor_size == (128, 128)
    same(rec.events, ev)
    same(sd.read_events(tmp_path / "g.aedat"), ev)


def test_aedat31_skips_other_packets_invalid_events_and_overflow(tmp_path):
    head = b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"

    def packet(typ, size, overflow, payload, number):
        h = np.zeros(1, aedat3.PACKET_HEADER)
        h["type"], h["size"], h["ts_overflow"] = typ, size, overflow
        h["capacity"], h["number"], h["valid"] = number, number, number
        return h.tobytes() + payload

    special = packet(0, 8, 0, bytes(16), 2)  # special events packet: skipped
    ev = np.zeros(3, aedat3.POLARITY_EVENT)
    ev["data"] = [1 | (1 << 1) | (7 << 2) | (9 << 17), 0 | (3 << 2), 1 | (5 << 2) | (6 << 17)]  # 2nd invalid
    ev["t"] = [100, 200, 300]
    pol = packet(1, 8, 1, ev.tobytes(), 3)  # overflow counter 1: + 2**31
    (tmp_path / "p.aedat").write_bytes(head + special + pol)
    out = sd.read_aedat31(tmp_path / "p.aedat").events
    assert out.tolist() == [(9, 7, 2**31 + 100, 1), (6, 5, 2**31 + 300, 0)]


def test_aedat31_errors(tmp_path, rng):
    ev = random_events(rng, 10, 128, 128)
    sd.write_aedat31(tmp_path / "g.aedat", ev)
    data = (tmp_path / "g.aedat").read_bytes()
    (tmp_path / "t.aedat").write_bytes(data[:-3])
    with pytest.raises(EventFileError, match=r"t\.aedat.*truncated"):
        sd.read_aedat31(tmp_path / "t.aedat")
    (tmp_path / "h.aedat").write_bytes(data[: -80 - 20])  # cut inside the packet header
    with pytest.raises(EventFileError, match=r"truncated"):
        sd.read_aedat31(tmp_path / "h.aedat")
    (tmp_path / "n.aedat").write_bytes(
        b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n" + data.split(b"#!END-HEADER\r\n")[1]
    )
    with pytest.raises(EventFileError, match="END-HEADER"):
        sd.read_aedat31(tmp_path / "n.aedat")
    (tmp_path / "e.aedat").write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
    with pytest.raises(EventFileError, match="no events"):
        sd.read_aedat31(tmp_path / "e.aedat")
    bad = sd.make_events([200], [3], [5], [1])
    sd.write_aedat31(tmp_path / "o.aedat", bad)
    with pytest.raises(EventFileError, match="outside the declared sensor size 128x128"):
        sd.read_aedat31(tmp_path / "o.aedat")
    with pytest.raises(EventFileError, match="not an AEDAT 3.1"):
        sd.read_aedat31(_write(tmp_path / "x.aedat", b"#hello\r\n"))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_gesture_labels(tmp_path):
    (tmp_path / "u_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,100,200\n1,250,400\n")
    lab = sd.read_gesture_labels(tmp_path / "u_labels.csv")
    assert lab.tolist() == [(2, 100, 200), (0, 250, 400)]
    ev = sd.make_events(
        np.arange(10), np.zeros(10), [50, 100, 150, 199, 200, 240, 250, 300, 399, 400], np.zeros(10)
    )
    seg = sd.split_gesture_segments(ev, lab)
    assert [s[1] for s in seg] == [2, 0]
    assert seg[0][0]["t"].tolist() == [100, 150, 199]
    assert seg[1][0]["t"].tolist() == [250, 300, 399]
    (tmp_path / "bad.csv").write_text("cls,a,b\n1,2,3\n")
    with pytest.raises(EventFileError, match=r"bad\.csv.*header"):
        sd.read_gesture_labels(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("class,startTime_usec,endTime_usec\n1,500,400\n")
    with pytest.raises(EventFileError, match="end after it starts"):
        sd.read_gesture_labels(tmp_path / "bad2.csv")


# ---------------------------------------------------------------- Prophesee DAT + boxes
def test_dat_round_trip(tmp_path, rng):
    ev = random_events(rng, 400, 304, 240)
    sd.write_prophesee_dat(tmp_path / "a_td.dat", ev)
    rec = sd.read_prophesee_dat(tmp_path / "a_td.dat")
    assert rec.sensor_size == (304, 240)
    same(rec.events, ev)
    sd.write_prophesee_dat(tmp_path / "s.dat", ev[ev["x"] < 100], sensor_size=(100, 240))
    assert sd.read_recording(tmp_path / "s.dat").sensor_size == (100, 240)


def test_dat_hand_bytes(tmp_path):
    import struct

    body = struct.pack("<II", 42, 5 | (6 << 14) | (1 << 28))
    (tmp_path / "h.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]) + body)
    assert sd.read_events(tmp_path / "h.dat").tolist() == [(5, 6, 42, 1)]


def test_dat_errors(tmp_path):
    import struct

    ok = struct.pack("<II", 42, 5 | (6 << 14) | (1 << 28))
    (tmp_path / "t.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]) + ok + b"\x00\x01")
    with pytest.raises(EventFileError, match=r"t\.dat.*truncated.*8-byte"):
        sd.read_prophesee_dat(tmp_path / "t.dat")
    (tmp_path / "ty.dat").write_bytes(b"% Version 2\n" + bytes([12, 16]) + ok)
    with pytest.raises(EventFileError, match="unsupported DAT event type 12"):
        sd.read_prophesee_dat(tmp_path / "ty.dat")
    (tmp_path / "nh.dat").write_bytes(bytes([0, 8]) + ok)
    with pytest.raises(EventFileError, match="no '%' header"):
        sd.read_prophesee_dat(tmp_path / "nh.dat")
    (tmp_path / "e.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]))
    with pytest.raises(EventFileError, match="no events"):
        sd.read_prophesee_dat(tmp_path / "e.dat")
    (tmp_path / "o.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]) + struct.pack("<II", 1, 400))
    with pytest.raises(EventFileError, match="outside the declared sensor size 304x240"):
        sd.read_prophesee_dat(tmp_path / "o.dat")
    (tmp_path / "p.dat").write_bytes(b"% Version 2\n" + bytes([0, 8]) + struct.pack("<II", 1, 3 << 28))
    with pytest.raises(EventFileError, match="polarity"):
        sd.read_prophesee_dat(tmp_path / "p.dat")


def test_gen1_boxes(tmp_path):
    old = np.zeros(
        3, dtype=[("t", "<u8"), ("x", "<f8"), ("y", "<f8"), ("w", "<f8"), ("h", "<f8"), ("class_id", "<u1")]
    )
    old["t"] = [300, 100, 200]
    old["x"], old["class_id"] = [1.5, 2.5, 3.5], [0, 1, 0]
    np.save(tmp_path / "old_bbox.npy", old)
    b = sd.read_gen1_boxes(tmp_path / "old_bbox.npy")
    assert b.dtype == prophesee.BOX_DTYPE
    assert b["ts"].tolist() == [100, 200, 300] and b["x"].tolist() == [2.5, 3.5, 1.5]
    assert np.all(b["confidence"] == 1.0)
    sd.write_gen1_boxes(tmp_path / "new_bbox.npy", b)
    np.testing.assert_array_equal(sd.read_gen1_boxes(tmp_path / "new_bbox.npy"), b)
    np.save(tmp_path / "obj_bbox.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EventFileError, match=r"obj_bbox\.npy.*not a Gen1 box array"):
        sd.read_gen1_boxes(tmp_path / "obj_bbox.npy")
    np.save(tmp_path / "f_bbox.npy", np.zeros(2, dtype=[("ts", "<u8"), ("x", "<f4")]))
    with pytest.raises(EventFileError, match="missing"):
        sd.read_gen1_boxes(tmp_path / "f_bbox.npy")


# ---------------------------------------------------------------- AEDAT 4 / dispatch
def test_aedat4_errors_and_missing_package(tmp_path, monkeypatch):
    (tmp_path / "x.aedat4").write_bytes(b"#!AER-DAT9\r\n")
    with pytest.raises(EventFileError, match="not an AEDAT 4 file"):
        sd.read_aedat4(tmp_path / "x.aedat4")
    (tmp_path / "y.aedat4").write_bytes(b"#!AER-DAT4.0\r\n" + bytes(5))
    monkeypatch.setitem(sys.modules, "aedat", None)  # simulate the extra not being installed
    with pytest.raises(ImportError, match=r"pip install spquant\[aedat\]"):
        sd.read_aedat4(tmp_path / "y.aedat4")


def test_aedat4_corrupt(tmp_path):
    pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")
    (tmp_path / "y.aedat4").write_bytes(b"#!AER-DAT4.0\r\n" + bytes(5))
    with pytest.raises(EventFileError, match=r"y\.aedat4"):
        sd.read_aedat4(tmp_path / "y.aedat4")


def test_aedat4_truncated_real_file(tmp_path, shared_events):
    """No AEDAT 4 writer exists here (flatbuffers + LZ4); the malformed case uses a cut real file."""
    pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")
    data = (shared_events / "sample.aedat4").read_bytes()
    (tmp_path / "cut.aedat4").write_bytes(data[:400_000])
    with pytest.raises(EventFileError, match=r"cut\.aedat4: .*(corrupt or truncated|truncated file)"):
        sd.read_aedat4(tmp_path / "cut.aedat4")


def test_detect_format(tmp_path):
    (tmp_path / "q.xyz").write_bytes(b"hello")
    with pytest.raises(EventFileError, match=r"q\.xyz.*cannot tell the event format"):
        sd.read_events(tmp_path / "q.xyz")
    (tmp_path / "q.aedat").write_bytes(b"hello")
    with pytest.raises(EventFileError, match="without a '#!AER-DAT' version line"):
        sd.read_events(tmp_path / "q.aedat")


def test_readers_are_vectorised(tmp_path, rng):
    # A vectorised reader runs the same Python lines whatever the event count; a per-event loop
    # would run about 100x more for 100x the events. Counted, not timed.
    from .helpers import python_lines_run

    counts = []
    for n in (1_000, 100_000):
        ev = random_events(rng, n, 34, 34, t_max=2**22)
        sd.write_atis_bin(tmp_path / f"e{n}.bin", ev)
        lines, got = python_lines_run(sd.read_atis_bin, tmp_path / f"e{n}.bin")
        same(got.events, ev)
        counts.append(lines)
    assert counts[1] < 2 * counts[0] + 50, counts
