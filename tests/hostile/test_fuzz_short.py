"""A short run of the mutation fuzz (benchmarks/fuzz.py): every loader, ~2,000 cases, one forked
worker with a per-case timeout and an address-space limit. Every case must end accepted or with a
clean project error: no unclear exception, crash, hang, memory blow-up or accepted corruption."""

from __future__ import annotations

import pytest

fuzz = pytest.importorskip("benchmarks.fuzz")


@pytest.fixture(scope="module")
def targets():
    return fuzz.build_seeds()


def test_every_seed_loads_unchanged(targets, tmp_path):
    """A seed its own loader refuses would leave every mutation of it stuck at the first check
    (an AEDAT 4 seed once never reached event decoding): each seed must load and pass its check."""
    for name, t in targets.items():
        for k, files in enumerate(t.seeds):
            folder = tmp_path / f"{name}-{k}"
            folder.mkdir()
            for n, b in files.items():
                (folder / n).write_bytes(b)
            res = t.load(fuzz._main_path(t, folder, files))
            if t.check is not None:
                t.check(res)


def test_short_fuzz_all_loaders_clean(targets):
    res = fuzz.run_fuzz(2000, seed=0, targets=targets, timeout=10, mem_mb=1024)
    report = fuzz.format_report(res)
    bad = {n: {o: c[o] for o in fuzz.BAD if c[o]} for n, c in res["counts"].items()}
    assert not any(bad.values()), report
    # every loader was exercised, and the mutations reached both outcomes that are allowed
    assert all(sum(c.values()) > 20 for c in res["counts"].values()), report
    assert all(c["error"] > 0 for c in res["counts"].values()), report
    assert sum(c["ok"] for c in res["counts"].values()) > 100, report


def test_harness_detects_each_bad_outcome(targets, tmp_path):
    """The classifier itself: a loader that crashes, hangs, leaks a non-project exception, blows the
    memory limit or accepts a changed checksummed file is reported as such."""
    import os
    import signal

    import numpy as np

    seed = {"f.bin": b"0123456789"}

    def crash(p):
        os.kill(os.getpid(), signal.SIGSEGV)

    def hang(p):
        while True:
            pass

    def unclear(p):
        raise KeyError("x")

    def memory(p):
        return np.ones(1 << 33, np.uint8)  # 8 GiB: over the limit

    def accepts_anything(p):
        return open(p, "rb").read()

    cases = {"crash": crash, "hang": hang, "unclear": unclear, "memory": memory}
    fake = {n: fuzz.Target(n, [seed], "f.bin", fn) for n, fn in cases.items()}
    fake["silent"] = fuzz.Target("silent", [seed], "f.bin", accepts_anything, digest=lambda b: b)
    res = fuzz.run_fuzz(10, seed=0, targets=fake, timeout=1, mem_mb=512)
    for name in cases:
        assert res["counts"][name][name] == res["counts"][name].total() > 0, fuzz.format_report(res)
    assert res["counts"]["silent"]["silent"] > 0, fuzz.format_report(res)


def test_aedat4_seed_decodes_to_the_events_it_holds(tmp_path):
    """The hand-laid AEDAT 4 seed (its flatbuffers are not written by a library writer) reads back
    every event of every packet, so the fuzz reaches event decoding."""
    from spquant.data import readers as rd

    pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")
    ev = fuzz._events(40, 64, 48, 5)
    path = tmp_path / "x.aedat4"
    path.write_bytes(fuzz._aedat4_bytes(ev, (64, 48), packet_events=16))
    rec = rd.read_recording(path)
    assert rec.sensor_size == (64, 48)
    assert rec.events[["x", "y", "t", "p"]].tolist() == ev[["x", "y", "t", "p"]].tolist()
