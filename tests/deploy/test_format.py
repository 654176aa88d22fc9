"""The .spq file: round trip, accounting, atomic writes and clear errors on bad files."""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch

from spquant.deploy import Interpreter, fold_model
from spquant.deploy.packing import packed_nbytes
from spquant.deploy.targets.spq import HEADER, MAGIC, ModelFileError, file_report, load, loads, save
from spquant.quant import packed_bits_per_value
from tests.deploy.helpers import tiny_model


def _program(**kw):
    torch.manual_seed(0)
    model = tiny_model("vgg", size=16, **kw).eval()
    return fold_model(model, (1, 16, 16))


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("spq") / "m.spq"
    program = _program()
    save(program, path)
    return program, path.read_bytes()


def _split(data: bytes):
    magic, major, minor, mlen, mcrc, blen = HEADER.unpack_from(data)
    man = json.loads(data[HEADER.size : HEADER.size + mlen])
    return man, data[HEADER.size + mlen :]


def _join(man: dict, body: bytes, fix_crc=True) -> bytes:
    m = json.dumps(man).encode()
    return HEADER.pack(MAGIC, 1, 0, len(m), zlib.crc32(m), len(body)) + m + body


def test_round_trip_and_accounting(tmp_path):
    for kw in ({}, {"weight_bits": 4}):
        program = _program(**kw)
        path = tmp_path / "m.spq"
        size = save(program, path)
        back = load(path)
        assert (
            back.nodes == program.nodes
            and back.input == program.input
            and back.frac_bits == program.frac_bits
        )
        assert set(back.arrays) == set(program.arrays)
        for k in program.arrays:
            assert np.array_equal(back.arrays[k], program.arrays[k]), k
        x = np.random.default_rng(0).integers(0, 256, (4, 1, 16, 16))
        assert np.array_equal(Interpreter(back).run(x, T=2), Interpreter(program).run(x, T=2))
        rep = file_report(path)
        assert rep["file_bytes"] == size == os.path.getsize(path)
        # weight blobs = params x packed bits (per layer, rounded up to whole bytes)
        want = sum(
            int(
                np.ceil(
                    program.arrays[n["weight"]].size * packed_bits_per_value(2 ** n["bits"] - 1) / 8 - 1e-9
                )
            )
            for n in program.weight_nodes()
        )
        assert rep["weight_blob_bytes"] == want
        assert abs(rep["weight_blob_bytes"] - rep["accounting_packed_bytes"]) < len(program.weight_nodes())
        man, body = _split(path.read_bytes())
        for n in program.weight_nodes():
            assert man["blobs"][n["weight"]]["nbytes"] == packed_nbytes(
                program.arrays[n["weight"]].size, n["bits"]
            )
        assert rep["blob_bytes"] == len(body) == rep["weight_blob_bytes"] + rep["fixed_point_param_bytes"]
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, blob, monkeypatch):
    program, data = blob
    path = tmp_path / "m.spq"
    path.write_bytes(data)
    import spquant.deploy.targets.spq as fmt

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "fsync", boom)
    with pytest.raises(OSError):
        save(program, path)
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["m.spq"]


@pytest.mark.parametrize("cut", [0, 3, 23, 24, 100, -1])
def test_truncated(blob, cut):
    _, data = blob
    with pytest.raises(ModelFileError, match="truncated"):
        loads(data[: cut if cut >= 0 else len(data) + cut])


def test_header_problems(blob, tmp_path):
    _, data = blob
    with pytest.raises(ModelFileError, match="not a .spq"):
        loads(b"PK\x03\x04" + data[4:])
    with pytest.raises(ModelFileError, match=r"version 2\.0 is not supported"):
        loads(data[:4] + struct.pack("<HH", 2, 0) + data[8:])
    with pytest.raises(ModelFileError, match="trailing"):
        loads(data + b"\x00")
    with pytest.raises(ModelFileError, match="exceeds"):
        loads(data[:8] + struct.pack("<I", 2**31) + data[12:])
    with pytest.raises(ModelFileError, match="cannot read"):
        load(tmp_path / "missing.spq")


def test_corrupt_bytes(blob):
    _, data = blob
    mlen = HEADER.unpack_from(data)[3]
    bad = bytearray(data)
    bad[HEADER.size + 5] ^= 0x01
    with pytest.raises(ModelFileError, match="manifest checksum"):
        loads(bytes(bad))
    bad = bytearray(data)
    bad[HEADER.size + mlen + 3] ^= 0x01
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        loads(bytes(bad))


def _edit(data, fn):
    man, body = _split(data)
    body = fn(man, body)
    return _join(man, body if body is not None else _split(data)[1])


HOSTILE = {
    "unknown op": (lambda m, b: m["nodes"][0].update(op="exec"), "unknown op"),
    "bool as int": (lambda m, b: m["nodes"][0].update(stride=True), "must be an integer"),
    "huge shift": (lambda m, b: m["nodes"][0].update(shift=99), "shift"),
    "bits vs blob": (lambda m, b: m["nodes"][0].update(bits=4, max_code=7), "packed 4-bit"),
    "undefined input": (lambda m, b: m["nodes"][1].update(inputs=["nowhere"]), "not defined"),
    "huge shape": (
        lambda m, b: m["blobs"][m["nodes"][0]["weight"]].update(shape=[2**20, 2**20, 3, 3]),
        "too many|outside",
    ),
    "blob past end": (
        lambda m, b: m["blobs"][m["nodes"][0]["M"]].update(offset=len(b) - 2),
        "runs past|overlap",
    ),
    "nbytes lie": (lambda m, b: m["blobs"][m["nodes"][0]["weight"]].update(nbytes=1), "needs"),
    "path name": (lambda m, b: m["nodes"][0].update(name="../../etc"), "must be a name"),
    "bad grid": (lambda m, b: next(n for n in m["nodes"] if n["op"] == "lif").update(lb=1), "outside"),
    "shape mismatch": (lambda m, b: m["input"].update(shape=[3, 16, 16]), "inconsistent program"),
    "wrong format": (lambda m, b: m.update(format="other"), "format"),
    "unused blob": (
        lambda m, b: m["blobs"].update(
            extra={"encoding": "int32le", "shape": [0], "offset": 0, "nbytes": 0, "crc32": 0}
        ),
        "unreferenced",
    ),
    "accounting lie": (lambda m, b: m["accounting"].update(weight_params=1), "accounting"),
    "infinite scale": (lambda m, b: m["input"].update(scale=float("inf")), "positive finite"),
    "not json": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_manifest(blob, case):
    _, data = blob
    fn, msg = HOSTILE[case]
    if fn is None:
        man, body = _split(data)
        m = b"{not json"
        bad = HEADER.pack(MAGIC, 1, 0, len(m), zlib.crc32(m), len(body)) + m + body
    else:
        bad = _edit(data, fn)
    with pytest.raises(ModelFileError, match=msg):
        loads(bad)


def test_bad_weight_codes(blob):
    """A ternary byte >= 243 (no valid 5-trit group) is caught even with a matching checksum."""
    _, data = blob

    def poison(man, body):
        w = man["blobs"][
            man["nodes"][2]["weight"] if man["nodes"][2]["op"] == "conv" else man["nodes"][3]["weight"]
        ]
        b = bytearray(body)
        b[w["offset"]] = 250
        w["crc32"] = zlib.crc32(bytes(b[w["offset"] : w["offset"] + w["nbytes"]]))
        return bytes(b)

    with pytest.raises(ModelFileError, match="valid base-3"):
        loads(_edit(data, poison))
