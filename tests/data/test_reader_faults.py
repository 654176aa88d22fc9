"""Readers on hand-packed bytes: a readable AEDAT 4 file laid out by hand (the other AEDAT 4 tests
use real recordings or refuse broken ones), and one file per fault branch of every reader, each of
which must raise EventFileError naming the file (never another exception, never a file-less
error). Format switches of detect_format, writer refusals and header edge cases close it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from spquant.data import readers as rd
from spquant.data.events import make_events
from spquant.errors import EventFileError

EVENTS = make_events([1, 2, 5, 7], [3, 4, 6, 1], [10, 20, 30, 45], [1, 0, 1, 0])


def _refused(read, p, match: str | None = None, **kw):
    with pytest.raises(EventFileError, match=match) as e:
        read(p, **kw)
    assert e.value.path == str(p)
    return e.value


# ------------------------------------------------------------------------------ AEDAT 4 by hand
def _ioheader(xml: bytes, table_pos: int, layout: str) -> bytes:
    """The IOHeader flatbuffer: root offset, 'IOHE', a vtable and the table (compression 0,
    dataTablePosition, infoNode = the XML string: uint32 length, bytes, NUL).

    'standard': vtable (size 10, table 20, fields at 4, 12, 8) before the table at 20;
    'vtable-after': table at 8, its vtable after it (a negative vtable offset, as flatbuffers allow);
    'no-info': a two-field vtable without the infoNode."""
    if layout == "standard":
        body = struct.pack("<I4sHHHHHH", 20, b"IOHE", 10, 20, 4, 12, 8, 0)
        body += struct.pack("<iiIq", 12, 0, 12, table_pos) + struct.pack("<I", len(xml)) + xml + b"\0"
    elif layout == "vtable-after":
        body = struct.pack("<I4siiIIq", 8, b"IOHE", -24, 0, 28, 0, table_pos)  # table at 8
        body += struct.pack("<HHHHHH", 10, 24, 4, 16, 8, 0)  # vtable at 32; the string at 16 + 28
        body += struct.pack("<I", len(xml)) + xml + b"\0"
    else:
        body = struct.pack("<I4sHHHHiiq", 16, b"IOHE", 8, 16, 4, 8, 8, 0, table_pos)
    return body + b"\0" * (-len(body) % 4)


def _aedat4(ev, size, stream_id=0, per_packet=2, table=False, xml_pad=0, layout="standard") -> bytes:
    """IOHeader flatbuffer (compression NONE, dataTablePosition, infoNode XML) and size-prefixed
    EventPacket flatbuffers ('EVTS': root table at 16, one vector of 16-byte events t, x, y, on)."""
    w, h = size
    xml = (
        f'<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        f'<node name="{stream_id}" path="/mainloop/Recorder/outInfo/{stream_id}/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        f'<node name="info" path="/mainloop/Recorder/outInfo/{stream_id}/info/">'
        f'<attr key="sizeX" type="int">{w}</attr><attr key="sizeY" type="int">{h}</attr>'
        "</node></node></node></dv>" + " " * xml_pad
    ).encode()
    packets = b""
    for s in range(0, len(ev), per_packet):
        c = ev[s : s + per_packet]
        rec = np.zeros(len(c), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])
        rec["t"], rec["x"], rec["y"], rec["on"] = c["t"], c["x"], c["y"], c["p"]
        inner = struct.pack("<I4sHHHHiII", 16, b"EVTS", 0, 6, 8, 4, 6, 4, len(c)) + rec.tobytes()
        p = struct.pack("<I", len(inner)) + inner
        packets += struct.pack("<iI", stream_id, len(p)) + p

    def header(table_pos: int) -> bytes:
        body = _ioheader(xml, table_pos, layout)
        return b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(body)) + body

    if not table:
        return header(-1) + packets
    # a data table after the packets (here: bytes that are no packet): readers stop before it
    start = len(header(-1)) + len(packets)
    return header(start) + packets + struct.pack("<iI", 1, 0x7FFFFFFF) + b"\x07" * 40


XML_LEN_AT = 14 + 4 + 40  # magic and CR LF, header length, IOHeader tables: the string's length


@pytest.fixture
def aedat():
    return pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")


@pytest.mark.parametrize(
    "kw",
    [{}, {"table": True}, {"stream_id": 3, "per_packet": 1}, {"xml_pad": 1}, {"layout": "vtable-after"}],
    ids=["plain", "data-table", "stream3-packets-of-1", "xml-length", "vtable-after-table"],
)
def test_aedat4_hand_packed(tmp_path, aedat, kw):
    p = tmp_path / "rec.aedat4"
    pad = 0
    if kw.get("xml_pad"):  # the description's length prefix starts with a byte that is no UTF-8 text
        pad = (0x90 - _aedat4(EVENTS, (64, 48))[XML_LEN_AT]) % 256
    p.write_bytes(_aedat4(EVENTS, (64, 48), **{**kw, "xml_pad": pad}))
    if kw.get("xml_pad"):
        assert p.read_bytes()[XML_LEN_AT] == 0x90
    sid = kw.get("stream_id", 0)
    assert rd.detect_format(p) == "aedat4"
    rec = rd.read_recording(p)
    assert rec.sensor_size == (64, 48)
    assert rec.events[["x", "y", "t", "p"]].tolist() == EVENTS[["x", "y", "t", "p"]].tolist()
    assert rd.read_aedat4(p, stream_id=sid).events.tolist() == rec.events.tolist()
    assert rd.read_events(p, sensor_size=(70, 50)).tolist() == rec.events.tolist()
    assert rd.read_aedat4(p, sensor_size=(70, 50)).sensor_size == (70, 50)
    _refused(rd.read_aedat4, p, f"no event stream with id {sid + 1}", stream_id=sid + 1)
    _refused(rd.read_aedat4, p, "outside the declared sensor size", sensor_size=(5, 5))


def test_aedat4_faults_name_the_file(tmp_path, aedat):
    good = _aedat4(EVENTS, (64, 48))
    p = tmp_path / "x.aedat4"
    p.write_bytes(good.replace(b"typeIdentifier", b"typeIdentifi\xe9r", 1))
    _refused(rd.read_aedat4, p, "not UTF-8")
    p.write_bytes(good.replace(b"</dv>", b"</dx>", 1))  # lengths fine, the decoder refuses the XML
    _refused(rd.read_aedat4, p, "cannot decode the AEDAT 4 header")
    p.write_bytes(_aedat4(EVENTS, (64, 48), layout="no-info"))  # no stream description at all
    _refused(rd.read_aedat4, p, "cannot decode the AEDAT 4 header")
    at = 14 + 4 + 24  # the IOHeader's compression field: an unknown algorithm fails each packet
    p.write_bytes(good[:at] + struct.pack("<i", 9) + good[at + 4 :])
    _refused(rd.read_aedat4, p, "corrupt or truncated AEDAT 4 packet")


# ------------------------------------------------------------------------------ AEDAT 3.1 and labels
HEAD31 = b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def _packet31(overflow: int, events: list[tuple[int, int, int, int]]) -> bytes:
    """Polarity packet: 28-byte header (type 1, source 1, size 8, ts offset 4, overflow, capacity,
    number, valid), then (data: valid bit 0, p bit 1, y bits 2-16, x bits 17-31; int32 t)."""
    n = len(events)
    body = b"".join(struct.pack("<Ii", 1 | p << 1 | y << 2 | x << 17, t) for x, y, p, t in events)
    return struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, n, n, n) + body


def test_aedat31_hand_packed_and_its_faults(tmp_path):
    p = tmp_path / "g.aedat"
    p.write_bytes(HEAD31 + _packet31(1, [(3, 4, 1, 7)]))
    assert rd.read_recording(p).events[["x", "y", "t", "p"]].tolist() == [(3, 4, 7 + 2**31, 1)]
    p.write_bytes(HEAD31 + _packet31(-1, [(3, 4, 1, 7)]))
    _refused(rd.read_aedat31, p, r"negative timestamp overflow counter \(-1\)")
    p.write_bytes(b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n" + _packet31(0, [(3, 4, 1, 7)]))
    _refused(rd.read_aedat31, p, "no '#!END-HEADER' line")
    p.write_bytes(HEAD31 + _packet31(0, [(3, 4, 1, 7)])[:10])
    _refused(rd.read_aedat31, p, "10 bytes at offset 47 are too few")
    p.write_bytes(bytes(40))  # no header line at all
    _refused(rd.read_aedat31, p, "not an AEDAT 3.1 file")


def test_gesture_labels_not_utf8_names_the_file(tmp_path):
    p = tmp_path / "user01_labels.csv"
    p.write_bytes(b"class,startTime_usec,endTime_usec\n1,1\xa7,2\n")
    _refused(rd.read_gesture_labels, p, "not UTF-8")


# ------------------------------------------------------------------------------ Prophesee DAT and boxes
def test_dat_faults_name_the_file(tmp_path):
    p = tmp_path / "a_td.dat"
    p.write_bytes(b"% Version 2\n" + bytes([0, 8]))  # header only
    _refused(rd.memmap_prophesee_dat, p, "contains no events")
    p.write_bytes(b"% Version 2\n" + bytes([5, 8]) + bytes(8))
    _refused(rd.read_prophesee_dat, p, "unsupported DAT event type 5")
    _refused(rd.memmap_prophesee_dat, p, "unsupported DAT event type 5")
    p.write_bytes(b"% Height 240\n% Width 3O4\n" + bytes([0, 8]) + bytes(8))
    _refused(rd.read_prophesee_dat, p, "bad sensor size in the DAT header: width '3O4'")
    with pytest.raises(ValueError, match="16384"):
        rd.write_prophesee_dat(p, make_events([1], [1 << 14], [0], [1]))


def _boxes(**cols):
    names = ["ts", "x", "y", "w", "h", "class_id"]
    dt = [(n, cols[n].dtype if n in cols else "<f4") for n in names]
    arr = np.zeros(2, dt)
    arr["ts"], arr["w"], arr["h"], arr["class_id"] = [1, 2], 3, 4, 1
    for k, v in cols.items():
        arr[k] = v
    return arr


@pytest.mark.parametrize(
    "cols,match",
    [
        ({"x": np.array([0.0, np.nan], "<f4")}, "'x' holds NaN"),
        ({"w": np.array([1.0, -2.0], "<f4")}, r"'w' is negative \(-2.0\)"),
        ({"ts": np.array([1, 3 << 61], "<u8")}, "'ts' has values"),
        ({"class_id": np.array([1.0, 1.5], "<f4")}, "'class_id' holds non-integer"),
    ],
    ids=["nan", "negative-size", "ts-beyond-2^62", "fractional-class"],
)
def test_gen1_box_values_name_the_file(tmp_path, cols, match):
    p = tmp_path / "a_bbox.npy"
    np.save(p, _boxes(**cols), allow_pickle=False)
    _refused(rd.read_gen1_boxes, p, match)


def test_gen1_boxes_at_the_limits_and_missing(tmp_path):
    p = tmp_path / "a_bbox.npy"
    np.save(
        p, _boxes(ts=np.array([1, 2**62], "<u8"), class_id=np.array([0.0, 255.0], "<f4")), allow_pickle=False
    )
    got = rd.read_gen1_boxes(p)
    assert got["ts"].tolist() == [1, 2**62] and got["class_id"].tolist() == [0, 255]
    _refused(rd.read_gen1_boxes, tmp_path / "none_bbox.npy", "no such file")


# ------------------------------------------------------------------------------ Metavision RAW
def _raw(header: bytes, words: list[int], dtype="<u2") -> bytes:
    return header + np.array(words, dtype).tobytes()


def test_evt3_time_low_absent_means_zero(tmp_path):
    # TIME_HIGH 5, ADDR_Y 7, ADDR_X 3 (p = 1): no TIME_LOW yet, so t = 5 << 12
    ev = rd.evt.decode_evt3(np.array([0x8005, 0x0007, 0x2000 | 1 << 11 | 3], np.uint16))
    assert ev[["x", "y", "t", "p"]].tolist() == [(3, 7, 5 << 12, 1)]


@pytest.mark.parametrize(
    "header,size",
    [
        (b"%evt 3.0\n%end\n", None),  # no space after '%'
        (b"% format EVT3;height=1;width=1\n% end\n", (1, 1)),  # the smallest sensor
        (b"% format EVT3;width=640\n% geometry 640x480\n% end\n", (640, 480)),  # width alone: geometry
    ],
    ids=["no-space", "1x1", "width-without-height"],
)
def test_raw_header_variants(tmp_path, header, size):
    p = tmp_path / "r.raw"
    p.write_bytes(_raw(header, [0x8005, 0x0000, 0x2000]))
    rec = rd.read_recording(p)
    assert rec.sensor_size == size and rec.events[["x", "y", "t", "p"]].tolist() == [(0, 0, 5 << 12, 0)]


def test_evt3_vector_past_x_2047_names_the_file(tmp_path):
    p = tmp_path / "r.raw"
    # TIME_HIGH, ADDR_Y 0, VECT_BASE_X x = 2040, VECT_12 with all 12 bits: pixels 2040..2051
    p.write_bytes(_raw(b"% evt 3.0\n% end\n", [0x8005, 0x0000, 0x3000 | 2040, 0x4FFF]))
    _refused(rd.read_metavision_raw, p, r"max x 2051\): corrupt stream")


def test_raw_header_width_one_below_the_limit(tmp_path):
    p = tmp_path / "r.raw"
    p.write_bytes(_raw(b"% format EVT3;height=4;width=0\n% end\n", [0x8005, 0x0000, 0x2000]))
    _refused(rd.read_metavision_raw, p, "sensor size 0x4")


def test_writers_refuse_what_their_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="do not fit the sensor 4x4"):
        rd.write_evt2_raw(tmp_path / "a.raw", make_events([4], [0], [0], [1]), (4, 4))
    with pytest.raises(ValueError, match="0 <= y < 240"):
        rd.write_atis_bin(tmp_path / "a.bin", make_events([1], [240], [0], [1]))


# ------------------------------------------------------------------------------ format detection
@pytest.mark.parametrize(
    "name,head,fmt",
    [
        ("r.evt", b"% evt 3.0\n% end\n", "metavision_raw"),
        ("r.evt", b"% camera x\n% format EVT3;height=4;width=4\n% end\n", "metavision_raw"),
        ("r.evt", b"% evt 2.0\n% end\n", "metavision_raw"),
        ("r.evt", b"% evt 3.0\n% Version 2\n", "prophesee_dat"),  # no '% end': a DAT header
        ("r.dat", b"% evt 3.0\n% end\n", "prophesee_dat"),  # the extension wins
        ("r.raw", b"% Version 2\n", "metavision_raw"),
    ],
)
def test_detect_format_percent_headers(tmp_path, name, head, fmt):
    p = tmp_path / name
    p.write_bytes(head + bytes(8))
    assert rd.detect_format(p) == fmt


def test_read_events_passes_keywords_to_the_reader(tmp_path):
    p = tmp_path / "d.bin"
    rd.write_atis_bin(p, make_events([5], [1], [3], [1]))
    assert rd.read_recording(p, sensor_size=(34, 34)).sensor_size == (34, 34)
    _refused(rd.read_events, p, "outside the declared sensor size 2x2", sensor_size=(2, 2))
