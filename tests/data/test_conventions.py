"""Conventions pinned: for every event format, the x/y orientation and polarity sign spquant returns,
stated on a hand-made file, and compared with what tonic, SpikingJelly or expelliarmus (tonic's
binary-format reader) return for the same file. The cross-checks skip when the peer is not installed
(``pip install spquant[bench]`` brings them); the stated conventions are checked regardless.

Summary (docs/data.md has the table):

* ATIS ``.bin`` (N-MNIST, N-Caltech101): x = byte 0, y = byte 1 (row 0 at the top), p = bit 7 of
  byte 2 (1 = ON) -- identical to tonic and SpikingJelly.
* AEDAT 2.0 DVS128 (CIFAR10-DVS): three conventions (``read_aedat2(convention=...)``); the
  CIFAR10-DVS data set uses SpikingJelly's (x = 127 - bits 8-14, y = 127 - bits 1-7, p = 1 - bit 0).
  tonic's ``read_dvs_128`` swaps the raw axes and keeps bit 0 (``convention='tonic'``).
* AEDAT 3.1 (DVS128 Gesture): x = bits 17-31, y = bits 2-16, p = bit 1 -- identical to tonic and
  SpikingJelly.
* AEDAT 4: x, y, ``on`` as the file stores them -- identical to tonic.
* Prophesee DAT / EVT 2.0 / EVT 3.0: x, y as the sensor addresses them (row 0 at the top), p = 1 for
  CD_ON (brighter) -- identical to expelliarmus.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import spquant.data as sd
from spquant.data.events import make_events

from . import fake_layouts as fake


def _xytp(ev) -> list:
    return list(zip(ev["x"].tolist(), ev["y"].tolist(), ev["t"].tolist(), ev["p"].tolist()))


def _peer(name: str):
    return pytest.importorskip(
        name, reason=f"cross-check peer {name!r} not installed (pip install spquant[bench])"
    )


def _spikingjelly(module: str, *names: str) -> dict:
    """SpikingJelly's own reader functions, taken from its installed source file: importing
    ``spikingjelly.datasets`` needs torchvision, which spquant does not install, so the top-level
    constants and the named functions of ``spikingjelly/datasets/<module>.py`` are executed alone
    (they only use numpy and struct)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("spikingjelly")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("cross-check peer 'spikingjelly' not installed (pip install spquant[bench])")
    from pathlib import Path

    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / f"{module}.py"
    tree = ast.parse(path.read_text())
    keep = [
        n
        for n in tree.body
        if (isinstance(n, ast.FunctionDef) and n.name in names)
        or (
            isinstance(n, ast.Assign)
            and all(isinstance(t, ast.Name) for t in n.targets)
            and isinstance(n.value, ast.Constant)
        )
    ]
    ns = {"np": np, "struct": struct, "Union": object, "Path": Path, "Optional": object}
    ns["Union"] = ns["Optional"] = _AnyType()
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)
    missing = [n for n in names if n not in ns]
    if missing:
        pytest.skip(f"this SpikingJelly version has no {missing} in {path.name}")
    return ns


class _AnyType:
    """Stands in for typing.Union / Optional in the annotations of the executed functions."""

    def __getitem__(self, item):
        return object


def _tonic_dvs(reader: str, path) -> np.ndarray:
    """tonic.io.read_dvs_128 / read_dvs_ibm. tonic 1.7's header helper returns three values where these
    readers unpack two; the wrapper passes the first two on so tonic's own bit extraction runs."""
    _peer("tonic")
    import tonic.io

    helper = tonic.io.read_aedat_header_from_file
    try:
        tonic.io.read_aedat_header_from_file = lambda f: helper(f)[:2]
        _, ev = getattr(tonic.io, reader)(str(path))
    finally:
        tonic.io.read_aedat_header_from_file = helper
    return ev


# ------------------------------------------------------------------ ATIS .bin
def test_atis_bin_convention(tmp_path):
    # byte0 x=5, byte1 y=9, byte2 bit7 = 1 (ON) + t = 0x000102
    (tmp_path / "a.bin").write_bytes(bytes([5, 9, 0x80, 0x01, 0x02, 7, 1, 0x00, 0x00, 0x10]))
    assert _xytp(sd.read_atis_bin(tmp_path / "a.bin").events) == [(7, 1, 16, 0), (5, 9, 258, 1)]


def test_atis_bin_matches_tonic_and_spikingjelly(tmp_path, rng):
    ev = make_events(
        rng.integers(0, 34, 500),
        rng.integers(0, 34, 500),
        np.sort(rng.integers(0, 3 * 10**7, 500)),
        rng.integers(0, 2, 500),
    )  # 30 s: overflow markers included
    sd.write_atis_bin(tmp_path / "n.bin", ev)
    ours = sd.read_atis_bin(tmp_path / "n.bin", sensor_size=(34, 34)).events
    assert _xytp(ours) == _xytp(ev)
    _peer("tonic")
    import tonic.datasets
    import tonic.io

    t = tonic.io.read_mnist_file(str(tmp_path / "n.bin"), dtype=tonic.datasets.NMNIST.dtype)
    assert list(zip(t["x"].tolist(), t["y"].tolist(), t["t"].tolist(), t["p"].astype(int).tolist())) == _xytp(
        ours
    )
    # SpikingJelly's reader does not unroll the y = 240 overflow markers, so compare it on a recording
    # shorter than 2**23 us (8.4 s; real N-MNIST / N-Caltech101 samples last about 0.3 s)
    short = ev[ev["t"] < 2**23]
    sd.write_atis_bin(tmp_path / "s.bin", short)
    sj = _spikingjelly("utils", "load_ATIS_bin")["load_ATIS_bin"](str(tmp_path / "s.bin"))
    assert list(zip(sj["x"].tolist(), sj["y"].tolist(), sj["t"].tolist(), sj["p"].tolist())) == _xytp(short)


# ------------------------------------------------------------------ AEDAT 2.0 (CIFAR10-DVS)
def test_aedat2_dvs128_conventions(tmp_path):
    # address: bit 0 = 1, bits 1-7 = 5, bits 8-14 = 9
    addr = 1 | (5 << 1) | (9 << 8)
    (tmp_path / "c.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + struct.pack(">II", addr, 100))
    f = tmp_path / "c.aedat"
    assert _xytp(sd.read_aedat2(f).events) == [(5, 9, 100, 1)]
    assert _xytp(sd.read_aedat2(f, convention="spikingjelly").events) == [(127 - 9, 127 - 5, 100, 0)]
    assert _xytp(sd.read_aedat2(f, convention="tonic").events) == [(9, 5, 100, 1)]
    for conv in ("raw", "spikingjelly", "tonic"):  # the writer inverts each convention
        ev = sd.read_aedat2(f, convention=conv).events
        sd.write_aedat2(tmp_path / f"{conv}.aedat", ev, convention=conv)
        assert (tmp_path / f"{conv}.aedat").read_bytes().endswith(struct.pack(">II", addr, 100))


def test_cifar10dvs_matches_spikingjelly_and_tonic(tmp_path):
    root = fake.write_cifar10dvs(tmp_path / "c", per_class=1, events=300)
    f = root / "bird" / "cifar10_bird_0.aedat"
    ds = sd.CIFAR10DVS(root, "train", split_mode="authors")
    i = [k for k, p in enumerate(ds.files) if p == f]
    ours = ds[i[0]][0] if i else sd.read_aedat2(f, convention="spikingjelly").events
    assert _xytp(ours) == _xytp(sd.read_aedat2(f, convention="spikingjelly").events)
    fns = _spikingjelly(
        "cifar10_dvs",
        "_read_bits",
        "_skip_header",
        "_load_raw_events",
        "_parse_raw_address",
        "_load_events",
        "_load_origin_data",
    )
    sj = fns["_load_origin_data"](str(f))
    assert list(
        zip(
            np.asarray(sj["x"]).tolist(),
            np.asarray(sj["y"]).tolist(),
            np.asarray(sj["t"]).tolist(),
            np.asarray(sj["p"]).tolist(),
        )
    ) == _xytp(ours)
    t = _tonic_dvs("read_dvs_128", f)
    tonic_conv = sd.read_aedat2(f, convention="tonic").events
    assert list(zip(t["x"].tolist(), t["y"].tolist(), t["t"].tolist(), t["p"].astype(int).tolist())) == _xytp(
        tonic_conv
    )


def test_count_frames_match_spikingjelly_split_by_number(tmp_path, rng):
    fns = _spikingjelly(
        "utils",
        "integrate_events_segment_to_frame",
        "cal_fixed_frames_number_segment_index",
        "integrate_events_by_fixed_frames_number",
    )
    integrate_events_by_fixed_frames_number = fns["integrate_events_by_fixed_frames_number"]
    ev = make_events(
        rng.integers(0, 20, 1003),
        rng.integers(0, 16, 1003),
        np.sort(rng.integers(0, 10**6, 1003)),
        rng.integers(0, 2, 1003),
    )
    sj = integrate_events_by_fixed_frames_number({k: ev[k] for k in "txyp"}, "number", 7, 16, 20)
    ours = sd.to_frames(ev, (20, 16), 7, "count2", bins="count")
    np.testing.assert_array_equal(ours, sj)  # channel 0 = OFF (p = 0), channel 1 = ON, as SpikingJelly


# ------------------------------------------------------------------ AEDAT 3.1 (DVS128 Gesture)
def test_aedat31_convention_matches_tonic_and_spikingjelly(tmp_path, rng):
    ev = make_events([5, 100], [9, 3], [10, 20], [1, 0])
    sd.write_aedat31(tmp_path / "g.aedat", ev)
    raw = (tmp_path / "g.aedat").read_bytes()
    data = struct.unpack_from("<I", raw, raw.index(b"#!END-HEADER\r\n") + 14 + 28)[0]
    assert (data >> 17, (data >> 2) & 0x7FFF, (data >> 1) & 1) == (
        5,
        9,
        1,
    )  # x bits 17+, y bits 2-16, p bit 1
    big = make_events(
        rng.integers(0, 128, 2000),
        rng.integers(0, 128, 2000),
        np.sort(rng.integers(0, 10**6, 2000)),
        rng.integers(0, 2, 2000),
    )
    sd.write_aedat31(tmp_path / "b.aedat", big, packet_size=300)
    ours = sd.read_aedat31(tmp_path / "b.aedat").events
    assert _xytp(ours) == _xytp(big)
    t = _tonic_dvs("read_dvs_ibm", tmp_path / "b.aedat")
    assert list(zip(t["x"].tolist(), t["y"].tolist(), t["t"].tolist(), t["p"].astype(int).tolist())) == _xytp(
        ours
    )
    sj = _spikingjelly("utils", "load_aedat_v3")["load_aedat_v3"](str(tmp_path / "b.aedat"))
    assert list(zip(sj["x"].tolist(), sj["y"].tolist(), sj["t"].tolist(), sj["p"].tolist())) == _xytp(ours)


# ------------------------------------------------------------------ AEDAT 4
def test_aedat4_matches_tonic(shared_events):
    _peer("aedat")
    _peer("tonic")
    import tonic.io

    ours = sd.read_aedat4(shared_events / "davis346.aedat4").events
    t = tonic.io.read_aedat4(str(shared_events / "davis346.aedat4"))
    assert list(
        zip(t["x"].tolist(), t["y"].tolist(), t["t"].tolist(), t["on"].astype(int).tolist())
    ) == _xytp(ours)


# ------------------------------------------------------------------ Prophesee
def _wizard_events(encoding: str, path) -> list:
    expelliarmus = _peer("expelliarmus")
    arr = expelliarmus.Wizard(encoding=encoding, fpath=str(path)).read()
    return list(zip(arr["x"].tolist(), arr["y"].tolist(), arr["t"].tolist(), arr["p"].astype(int).tolist()))


def test_dat_convention_and_expelliarmus(tmp_path, shared_events):
    # x bits 0-13, y bits 14-27, p bits 28-31 (1 = ON)
    body = bytes([12, 8]) + struct.pack("<II", 7, 5 | (6 << 14) | (1 << 28))
    (tmp_path / "one.dat").write_bytes(b"% Version 2\n% Height 720\n% Width 1280\n" + body)
    assert _xytp(sd.read_prophesee_dat(tmp_path / "one.dat").events) == [(5, 6, 7, 1)]
    for k, ev_type in enumerate((0, 12)):
        ncars = sd.read_prophesee_dat(shared_events / "sample_ncars.dat").events
        sd.write_prophesee_dat(tmp_path / f"n{k}.dat", ncars, event_type=ev_type)
        assert _wizard_events("dat", tmp_path / f"n{k}.dat") == _xytp(sd.read_events(tmp_path / f"n{k}.dat"))


@pytest.mark.parametrize("encoding", ["evt2", "evt3"])
def test_raw_convention_matches_expelliarmus(tmp_path, rng, encoding):
    """x, y, p always agree. Timestamps agree in EVT 2.0; in EVT 3.0 they agree while the time-high
    word stays put: expelliarmus adds 4096 us whenever the time-low word decreases, on top of the
    time-high word's own increment, where the format description composes t = high << 12 | low
    (documented in docs/data.md)."""
    n = 3000
    ev = make_events(
        rng.integers(0, 1280, n),
        rng.integers(0, 720, n),
        np.sort(rng.integers(0, 3 * 10**7, n)),
        rng.integers(0, 2, n),
    )
    writer = sd.write_evt2_raw if encoding == "evt2" else sd.write_evt3_raw
    writer(tmp_path / "r.raw", ev, (1280, 720))
    ours = sd.read_metavision_raw(tmp_path / "r.raw").events
    assert _xytp(ours) == _xytp(ev)
    theirs = _wizard_events(encoding, tmp_path / "r.raw")
    assert [(x, y, p) for x, y, _, p in theirs] == [(x, y, p) for x, y, _, p in _xytp(ours)]
    short = ev[ev["t"] < 4096]
    short = make_events(short["x"], short["y"], short["t"] + 4096 * 5, short["p"])  # one time-high value
    writer(tmp_path / "s.raw", short, (1280, 720))
    assert _wizard_events(encoding, tmp_path / "s.raw") == _xytp(
        sd.read_metavision_raw(tmp_path / "s.raw").events
    )
    if encoding == "evt2":
        assert [t for _, _, t, _ in theirs] == ev["t"].tolist()
