"""fetch (through file:// URLs, no network), the 'spquant data' CLI."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import zipfile

import numpy as np
import pytest

import spquant.data as sd
from spquant.cli import main
from spquant.data.fetch import FetchError, Resource, Source, fetch, manual_instructions

fetch_mod = importlib.import_module("spquant.data.fetch")


def _md5(b):
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    srv = tmp_path / "server"
    srv.mkdir()
    payload = b"hello idx"
    (srv / "a.gz").write_bytes(gzip.compress(payload))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Train/3/00001.bin", bytes([1, 2, 0x80, 0, 5]))
    (srv / "t.zip").write_bytes(buf.getvalue())
    src = Source(
        "Fake",
        "fake",
        "http://example.invalid",
        "fake/Train/<d>/<id>.bin",
        (
            Resource(
                "a.gz",
                ((srv / "missing.gz").as_uri(), (srv / "a.gz").as_uri()),
                _md5(payload),
                check="gunzip",
            ),
            Resource("t.zip", ((srv / "t.zip").as_uri(),), _md5(buf.getvalue()), extract_to=""),
        ),
    )
    sources = dict(fetch_mod.SOURCES)
    sources["fake"] = src
    monkeypatch.setattr(fetch_mod, "SOURCES", sources)
    return srv


def test_fetch_downloads_verifies_extracts(tmp_path, fake_sources):
    root = tmp_path / "data"
    dest = fetch("fake", root, progress=False)
    assert dest == root / "fake"
    assert gzip.decompress((dest / "a.gz").read_bytes()) == b"hello idx"  # second mirror used
    ev = sd.read_atis_bin(dest / "Train" / "3" / "00001.bin").events
    assert ev.tolist() == [(1, 2, 5, 1)]
    # a second call verifies and does not download again
    (fake_sources / "a.gz").unlink()
    assert fetch("fake", root, progress=False) == dest


def test_fetch_checksum_mismatch(tmp_path, fake_sources):
    (fake_sources / "t.zip").write_bytes(b"not the zip")
    with pytest.raises(FetchError, match=r"(?s)t\.zip: checksum mismatch.*put these files into"):
        fetch("fake", tmp_path / "data", progress=False)
    assert (tmp_path / "data" / "fake" / "t.zip.bad").exists()


def test_fetch_network_failure_says_what_to_put_where(tmp_path, monkeypatch):
    src = fetch_mod.SOURCES["mnist"]
    dead = Source(
        src.name,
        src.folder,
        src.homepage,
        src.layout,
        tuple(
            Resource(r.filename, ("http://127.0.0.1:9/" + r.filename,), r.md5, r.check) for r in src.resources
        ),
    )
    monkeypatch.setitem(fetch_mod.SOURCES, "mnist", dead)
    with pytest.raises(FetchError) as e:
        fetch("mnist", tmp_path, progress=False, timeout=2)
    msg = str(e.value)
    assert "could not download" in msg
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "6bbc9ace898e44ae57da46a324031adb" in msg


def test_fetch_mnist_accepts_local_copies(tmp_path, shared_mnist):
    # files already in place (any gzip of the right content) are verified, nothing is downloaded
    import shutil

    shutil.copytree(shared_mnist, tmp_path / "mnist")
    assert fetch("mnist", tmp_path, progress=False) == tmp_path / "mnist"


def test_manual_datasets_and_unknown(tmp_path):
    with pytest.raises(FetchError, match=r"cannot be downloaded automatically.*gen1/train"):
        fetch("gen1", tmp_path)
    with pytest.raises(FetchError, match="unknown data set 'nope'"):
        fetch("nope", tmp_path)
    assert "cifar10-dvs/airplane.zip" in manual_instructions("cifar10-dvs", "R").replace("\\", "/")


def test_cli_fetch_and_info(tmp_path, capsys, fake_sources, shared_events):
    assert main(["data", "fetch", "fake", "--root", str(tmp_path)]) == 0
    assert "ready in" in capsys.readouterr().out
    assert main(["data", "fetch", "gen1", "--root", str(tmp_path)]) == 2
    assert "registration" in capsys.readouterr().err
    assert main(["data", "info", str(shared_events / "sample_nmnist.bin")]) == 0
    assert "4325 events" in capsys.readouterr().out
    (tmp_path / "bad.bin").write_bytes(b"123")
    assert main(["data", "info", str(tmp_path / "bad.bin")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_cli_emulate(tmp_path, capsys):
    x, y = np.zeros((6, 28, 28), np.uint8), np.arange(6, dtype=np.uint8)
    x[:, 8:20, 10:18] = 200
    sd.write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    sd.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    out = tmp_path / "cache"
    rc = main(
        [
            "data",
            "emulate",
            "mnist",
            "--root",
            str(tmp_path),
            "--out",
            str(out),
            "--splits",
            "train",
            "--workers",
            "2",
            "--chunk",
            "2",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "train: 6 images" in text
    ds = sd.EmulatedEvents(out, "train")
    assert len(ds) == 6 and ds[5][1] == 5
    np.testing.assert_array_equal(ds[2][0], sd.emulate(x[2]))  # same as the in-memory emulator
    assert main(["data", "emulate", "mnist", "--root", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["data"]) == 2


def test_cli_emulate_default_out_is_found_by_emulated_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPQUANT_CACHE", str(tmp_path / "cache"))
    x, y = np.zeros((3, 28, 28), np.uint8), np.arange(3, dtype=np.uint8)
    x[:, 8:20, 10:18] = 200
    sd.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    sd.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y)
    assert (
        main(["data", "emulate", "mnist", "--root", str(tmp_path), "--splits", "test", "--workers", "1"]) == 0
    )
    from spquant.data import emulated

    calls = []
    monkeypatch.setattr(emulated, "emulate_to_cache", lambda *a, **k: calls.append(1))
    ds = sd.EmulatedMNIST("test", source=tmp_path)
    assert calls == [] and len(ds) == 3  # the CLI's cache is reused
