"""Prophesee formats: DAT with Event2D (type 0) and EventCD (type 12) records, Metavision RAW in EVT 2.0
and EVT 3.0. The RAW files are encoded here word by word from Prophesee's public format description
(an encoder independent of the library's), plus the real recordings of ../shared/data re-encoded."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import spquant.data as sd
from spquant.data import EventFileError
from spquant.data.events import make_events
from spquant.data.readers.evt import decode_evt2, decode_evt3


def _canon(ev: np.ndarray) -> list:
    """Events as a sorted list (order within one timestamp is the encoder's choice)."""
    return sorted(ev[["x", "y", "t", "p"]].tolist(), key=lambda e: (e[2], e[1], e[0], e[3]))


def _raw_header(evt: str, w: int, h: int) -> bytes:
    return f"% date 2024-01-01\n% evt {evt}\n% geometry {w}x{h}\n% end\n".encode()


def encode_evt2(events: np.ndarray) -> bytes:
    """EVT 2.0, straight from the format description: a TIME_HIGH word (type 8, t >> 6 in bits 27-0)
    before every event whose high part differs from the last one, then CD_ON (1) / CD_OFF (0) words
    with t & 63 in bits 27-22, x in bits 21-11, y in bits 10-0."""
    out = []
    last_high = None
    for x, y, t, p in events[["x", "y", "t", "p"]].tolist():
        high = (t >> 6) & 0x0FFFFFFF
        if high != last_high:
            out.append((0x8 << 28) | high)
            last_high = high
        out.append((p << 28) | ((t & 0x3F) << 22) | (x << 11) | y)
    return struct.pack(f"<{len(out)}I", *out)


def encode_evt3(events: np.ndarray) -> bytes:
    """EVT 3.0 with vector words: events grouped by (t, y, p); a group of 3+ events becomes VECT_BASE_X
    followed by VECT_12 and VECT_8 masks (alternating, so both kinds occur), smaller groups single
    EVT_ADDR_X words. TIME_HIGH (8) / TIME_LOW (6) / EVT_ADDR_Y (0) are written when they change."""
    out = []
    state = {"high": None, "low": None, "y": None}
    ev = events[np.lexsort((events["x"], events["p"], events["y"], events["t"]))]
    keys = list(zip(ev["t"].tolist(), ev["y"].tolist(), ev["p"].tolist()))
    i = 0
    while i < len(keys):
        j = i
        while j < len(keys) and keys[j] == keys[i]:
            j += 1
        t, y, p = keys[i]
        xs = sorted(set(ev["x"][i:j].tolist()))
        if (t >> 12) != state["high"]:
            out.append((0x8 << 12) | ((t >> 12) & 0xFFF))
            state["high"], state["low"] = t >> 12, None
        if (t & 0xFFF) != state["low"]:
            out.append((0x6 << 12) | (t & 0xFFF))
            state["low"] = t & 0xFFF
        if y != state["y"]:
            out.append(y)
            state["y"] = y
        if len(xs) >= 3:
            base = xs[0]
            out.append((0x3 << 12) | (p << 11) | base)
            use12 = True
            while base <= xs[-1]:
                n = 12 if use12 else 8
                mask = sum(1 << (x - base) for x in xs if base <= x < base + n)
                out.append(((0x4 if use12 else 0x5) << 12) | mask)
                base += n
                use12 = not use12
        else:
            out += [(0x2 << 12) | (p << 11) | x for x in xs]
        i = j
    return struct.pack(f"<{len(out)}H", *out)


def _dense_events(rng, n_groups: int, w: int, h: int, t_step: int = 300) -> np.ndarray:
    """Events in bursts: several pixels of one row, one time and one polarity (what vectors encode)."""
    xs, ys, ts, ps = [], [], [], []
    t = 5
    for _ in range(n_groups):
        t += int(rng.integers(0, t_step))
        k = int(rng.integers(1, 20))
        x0 = int(rng.integers(0, w - 40))
        cols = np.unique(x0 + rng.integers(0, 40, k))
        xs += cols.tolist()
        ys += [int(rng.integers(0, h))] * cols.size
        ts += [t] * cols.size
        ps += [int(rng.integers(0, 2))] * cols.size
    return make_events(xs, ys, ts, ps)


# ------------------------------------------------------------------ DAT
def test_dat_type12_cd_events_round_trip(tmp_path, rng):
    ev = make_events(
        rng.integers(0, 1280, 500),
        rng.integers(0, 720, 500),
        np.sort(rng.integers(0, 10**7, 500)),
        rng.integers(0, 2, 500),
    )
    sd.write_prophesee_dat(tmp_path / "r_td.dat", ev, sensor_size=(1280, 720), event_type=12)
    raw = (tmp_path / "r_td.dat").read_bytes()
    body = raw.index(b"% Width 1280\n") + len(b"% Width 1280\n")
    assert raw[body : body + 2] == bytes([12, 8])  # event type 12 (EventCD), 8-byte events
    rec = sd.read_prophesee_dat(tmp_path / "r_td.dat")
    assert rec.sensor_size == (1280, 720)
    assert rec.events.tolist() == ev.tolist()
    mm, size = sd.memmap_prophesee_dat(tmp_path / "r_td.dat")
    assert size == (1280, 720) and mm.shape == (500,)
    assert sd.read_events(tmp_path / "r_td.dat").tolist() == ev.tolist()


def test_dat_type12_without_size_and_geometry_header(tmp_path):
    ev = make_events([2000], [1000], [3], [0])
    sd.write_prophesee_dat(tmp_path / "a.dat", ev, event_type=12)
    assert sd.read_prophesee_dat(tmp_path / "a.dat").sensor_size is None  # not Gen1's 304x240
    body = bytes([12, 8]) + struct.pack("<II", 7, 5 | (6 << 14) | (1 << 28))
    (tmp_path / "g.dat").write_bytes(b"% Version 2\n% geometry 64x48\n" + body)
    rec = sd.read_prophesee_dat(tmp_path / "g.dat")
    assert rec.sensor_size == (64, 48) and rec.events.tolist() == [(5, 6, 7, 1)]


def test_dat_refuses_other_types_naming_file(tmp_path):
    (tmp_path / "trig.dat").write_bytes(b"% Version 2\n" + bytes([14, 8]) + bytes(8))
    with pytest.raises(EventFileError, match=r"trig\.dat.*unsupported DAT event type 14"):
        sd.read_prophesee_dat(tmp_path / "trig.dat")
    (tmp_path / "s.dat").write_bytes(b"% Version 2\n" + bytes([12, 16]) + bytes(16))
    with pytest.raises(EventFileError, match=r"s\.dat.*size 16"):
        sd.read_prophesee_dat(tmp_path / "s.dat")


def test_real_ncars_as_type12(shared_events, tmp_path):
    ref = sd.read_prophesee_dat(shared_events / "sample_ncars.dat").events
    sd.write_prophesee_dat(tmp_path / "n.dat", ref, event_type=12)
    assert sd.read_prophesee_dat(tmp_path / "n.dat").events.tolist() == ref.tolist()


# ------------------------------------------------------------------ EVT 2.0
def test_evt2_hand_words(tmp_path):
    words = [
        0x8 << 28 | 3,  # time high: t = 3 << 6 = 192 + low
        0x1 << 28 | 5 << 22 | 100 << 11 | 40,  # ON  x=100 y=40 t=197
        0xA << 28 | 123,  # external trigger: skipped
        0x0 << 28 | 63 << 22 | 2047 << 11 | 2047,
    ]  # OFF x=2047 y=2047 t=255
    (tmp_path / "h.raw").write_bytes(_raw_header("2.0", 2048, 2048) + struct.pack("<4I", *words))
    assert sd.read_events(tmp_path / "h.raw").tolist() == [(100, 40, 197, 1), (2047, 2047, 255, 0)]
    assert sd.detect_format(tmp_path / "h.raw") == "metavision_raw"


def test_evt2_drops_events_before_first_time_high_and_unrolls_34_bit_wrap():
    top = (1 << 28) - 1
    words = np.array(
        [
            0x1 << 28 | 1 << 11 | 1,  # before any time high: no timestamp, dropped
            0x8 << 28 | top,
            0x1 << 28 | 2 << 22 | 3 << 11 | 4,
            0x8 << 28 | 0,
            0x0 << 28 | 1 << 22 | 5 << 11 | 6,
        ],
        np.uint32,
    )
    ev = decode_evt2(words)
    assert ev["t"].tolist() == [(top << 6) | 2, (1 << 34) | 1]
    assert ev[["x", "y", "p"]].tolist() == [(3, 4, 1), (5, 6, 0)]


def test_evt2_matches_independent_encoder_and_writer(tmp_path, rng):
    ev = make_events(
        rng.integers(0, 1280, 3000),
        rng.integers(0, 720, 3000),
        np.sort(rng.integers(0, 5 * 10**6, 3000)),
        rng.integers(0, 2, 3000),
    )
    (tmp_path / "e.raw").write_bytes(_raw_header("2.0", 1280, 720) + encode_evt2(ev))
    rec = sd.read_metavision_raw(tmp_path / "e.raw")
    assert rec.sensor_size == (1280, 720) and rec.events.tolist() == ev.tolist()
    sd.write_evt2_raw(tmp_path / "w.raw", ev, (1280, 720))
    assert (tmp_path / "w.raw").read_bytes().endswith(encode_evt2(ev))
    assert sd.read_events(tmp_path / "w.raw").tolist() == ev.tolist()


# ------------------------------------------------------------------ EVT 3.0
def test_evt3_hand_words_with_vectors():
    words = np.array(
        [
            0x8 << 12 | 1,
            0x6 << 12 | 10,  # t = (1 << 12) | 10 = 4106
            0x0 << 12 | 1 << 11 | 7,  # y = 7 (system-type bit set: ignored)
            0x2 << 12 | 1 << 11 | 30,  # single ON at x = 30
            0x3 << 12 | 0 << 11 | 100,  # vector base x = 100, OFF
            0x4 << 12 | 0b100000000101,  # VECT_12: x = 100, 102, 111
            0x5 << 12 | 0b10000001,  # VECT_8 at 112: x = 112, 119
            0x7 << 12 | 0xF,  # CONTINUED_4: skipped
            0x6 << 12 | 11,
            0x2 << 12 | 5,  # t = 4107, OFF at x = 5 (same y)
        ],
        np.uint16,
    )
    ev = decode_evt3(words)
    assert ev[["x", "y", "t", "p"]].tolist() == [
        (30, 7, 4106, 1),
        (100, 7, 4106, 0),
        (102, 7, 4106, 0),
        (111, 7, 4106, 0),
        (112, 7, 4106, 0),
        (119, 7, 4106, 0),
        (5, 7, 4107, 0),
    ]


def test_evt3_drops_before_state_and_unrolls_24_bit_wrap():
    words = np.array(
        [
            0x2 << 12 | 3,  # no time, no y: dropped
            0x8 << 12 | 0xFFF,
            0x6 << 12 | 0xFFF,
            0x2 << 12 | 4,  # time known but no y yet: dropped
            0x0 << 12 | 9,
            0x2 << 12 | 1 << 11 | 5,
            0x8 << 12 | 0,
            0x6 << 12 | 1,
            0x2 << 12 | 6,
        ],
        np.uint16,
    )
    ev = decode_evt3(words)
    assert ev[["x", "y", "t", "p"]].tolist() == [(5, 9, (1 << 24) - 1, 1), (6, 9, (1 << 24) | 1, 0)]


def test_evt3_matches_independent_vector_encoder(tmp_path, rng):
    ev = _dense_events(rng, 1500, 1280, 720)
    data = encode_evt3(ev)
    types = np.frombuffer(data, "<u2") >> 12
    assert (types == 4).sum() > 100 and (types == 5).sum() > 100 and (types == 2).sum() > 100
    (tmp_path / "v.raw").write_bytes(_raw_header("3.0", 1280, 720) + data)
    rec = sd.read_metavision_raw(tmp_path / "v.raw")
    assert rec.sensor_size == (1280, 720)
    assert _canon(rec.events) == _canon(ev)
    assert np.all(np.diff(rec.events["t"]) >= 0)


def test_evt3_writer_long_recording(tmp_path, rng):
    n = 4000
    ev = make_events(
        rng.integers(0, 640, n),
        rng.integers(0, 480, n),
        np.sort(rng.integers(0, 4 * 10**7, n)),
        rng.integers(0, 2, n),
    )  # 40 s: the 24-bit time base wraps twice
    sd.write_evt3_raw(tmp_path / "w.raw", ev, (640, 480))
    assert sd.read_events(tmp_path / "w.raw").tolist() == ev.tolist()


def test_raw_errors_name_the_file(tmp_path):
    (tmp_path / "odd.raw").write_bytes(_raw_header("3.0", 64, 64) + b"\x00\x80\x01")
    with pytest.raises(EventFileError, match=r"odd\.raw.*truncated.*2-byte word"):
        sd.read_metavision_raw(tmp_path / "odd.raw")
    (tmp_path / "enc.raw").write_bytes(b"% evt 4.0\n% end\n" + bytes(8))
    with pytest.raises(EventFileError, match=r"enc\.raw.*no supported encoding"):
        sd.read_metavision_raw(tmp_path / "enc.raw")
    (tmp_path / "big.raw").write_bytes(b"% evt 3.0\n% geometry 9999x10\n% end\n" + bytes(4))
    with pytest.raises(EventFileError, match=r"big\.raw.*2048x2048"):
        sd.read_metavision_raw(tmp_path / "big.raw")
    words = struct.pack("<3H", 0x8 << 12, 0x0 << 12 | 50, 0x2 << 12 | 70)
    (tmp_path / "out.raw").write_bytes(_raw_header("3.0", 64, 64) + words)
    with pytest.raises(EventFileError, match=r"out\.raw.*outside the declared sensor size 64x64"):
        sd.read_metavision_raw(tmp_path / "out.raw")
    (tmp_path / "none.raw").write_bytes(_raw_header("2.0", 64, 64) + struct.pack("<I", 0x8 << 28))
    with pytest.raises(EventFileError, match=r"none\.raw.*no CD events"):
        sd.read_metavision_raw(tmp_path / "none.raw")
    (tmp_path / "cut.raw").write_bytes(b"% evt 3.0\n% geometry 64")
    with pytest.raises(EventFileError, match=r"cut\.raw.*truncated inside the header"):
        sd.read_metavision_raw(tmp_path / "cut.raw")


@pytest.mark.parametrize("encoder,evt", [(encode_evt2, "2.0"), (encode_evt3, "3.0")])
def test_real_recordings_reencoded(shared_events, tmp_path, encoder, evt):
    """Real event streams (N-CARS DAT; the DAVIS346 AEDAT4 when the aedat extra is present) survive an
    EVT 2.0 / 3.0 encoding unchanged."""
    streams = [(sd.read_prophesee_dat(shared_events / "sample_ncars.dat").events, (304, 240))]
    try:
        import aedat  # noqa: F401

        streams.append((sd.read_aedat4(shared_events / "davis346.aedat4").events, (346, 260)))
    except ImportError:
        pass
    for k, (ev, (w, h)) in enumerate(streams):
        ev = ev.copy()
        ev["t"] -= ev["t"][0]  # AEDAT 4 stores Unix-epoch microseconds; a Prophesee counter starts near 0
        (tmp_path / f"{k}.raw").write_bytes(_raw_header(evt, w, h) + encoder(ev))
        assert _canon(sd.read_metavision_raw(tmp_path / f"{k}.raw").events) == _canon(ev)
