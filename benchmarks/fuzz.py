"""Mutation fuzzing of every spquant loader: seeded, with a per-case timeout and a memory limit.

Seeds are written by code (:func:`build_seeds`): event files of every format the readers support,
Gen1 boxes, IDX (raw and gzip), CIFAR-10 batches, ``.spq`` models, TOML recipes, ``--set``
overrides, run folders. Each case takes one seed and applies one mutation (bit flips, byte
insert/delete, truncation, length-field edits to 0 / max, value edits in JSON / TOML / npy rows;
some mutations repair checksums so the validators behind them are reached). Cases run in a forked
worker that limits its address space (``RLIMIT_AS``) and times every case; the parent restarts the
worker when it dies or hangs. Outcome classes:

``ok``        accepted (and, where checkable, equal to the seed or passing the loader's invariants)
``error``     a clean project error (:class:`spquant.errors.SpquantError`)
``unclear``   any other exception
``crash``     the worker died from a signal
``hang``      the case ran past the timeout
``memory``    MemoryError, or the memory limit was hit
``silent``    accepted corruption: a checksummed file whose content changed but loaded with a
              different result, or a loaded result that breaks the loader's invariants

Usage::

    nice -n 15 python benchmarks/fuzz.py --cases 100000 --seed 1 --out runs/fuzz
    python benchmarks/fuzz.py --cases 200 --targets spq,run   # a quick look

It prints counts per loader and outcome class and the peak memory per case: the largest growth of
the worker's resident set during one case ("peak MiB", with the size of that case's input) and the
largest growth divided by its input size ("max growth/input"); ``--out`` keeps the files of every
finding.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: import this checkout's spquant
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUTCOMES = ("ok", "error", "unclear", "crash", "hang", "memory", "silent")
BAD = ("unclear", "crash", "hang", "memory", "silent")


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """A loader under test. ``seeds``: file sets {name: bytes}; ``main``: the file passed to
    ``load``; ``check``: raises AssertionError when an accepted result breaks an invariant;
    ``digest``: a fingerprint of the loaded content (for checksummed formats: a changed file must
    not load to a different digest unless ``fixups`` repaired the checksums on purpose)."""

    name: str
    seeds: list[dict[str, bytes]]
    main: str
    load: Callable
    check: Callable | None = None
    digest: Callable | None = None
    structured: list[Callable] = field(default_factory=list)  # (rng, files) -> (files, repaired)
    weight: float = 1.0


def _events_check(res) -> None:
    ev, size = res.events, res.sensor_size
    if ev.size:
        t = ev["t"]
        assert int(t.min()) >= 0, "negative timestamp"
        assert bool(np.all(t[1:] >= t[:-1])), "not sorted by t"
        assert int(ev["p"].max()) <= 1, "polarity > 1"
        if size is not None:
            assert 0 < size[0] <= 1 << 16 and 0 < size[1] <= 1 << 16, f"sensor size {size}"
            assert int(ev["x"].max()) < size[0] and int(ev["y"].max()) < size[1], (
                "coordinate outside the sensor"
            )


def _boxes_check(b) -> None:
    if b.size:
        for f in ("x", "y", "w", "h", "confidence"):
            assert np.all(np.isfinite(b[f])), f"{f} not finite"
        assert float(b["w"].min()) >= 0 and float(b["h"].min()) >= 0, "negative size"
        assert bool(np.all(b["ts"][1:] >= b["ts"][:-1])), "not sorted"


def _labels_check(lab) -> None:
    if lab.size:
        assert int(lab["label"].min()) >= 0, "negative label"
        assert bool(np.all(lab["end"] > lab["start"])), "segment ends before it starts"


def _cifar_check(res) -> None:
    x, y = res
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (3, 32, 32), "bad image array"
    assert y.shape == (x.shape[0],) and (y.size == 0 or (int(y.min()) >= 0 and int(y.max()) <= 9)), (
        "bad labels"
    )


def _config_check(cfg) -> None:
    from spquant.train.config import check_limits

    check_limits(cfg, "fuzz")


def _program_digest(p) -> str:
    h = hashlib.sha256(
        json.dumps([p.input, p.frac_bits, p.nodes, p.meta], sort_keys=True, default=str).encode()
    )
    for k in sorted(p.arrays):
        h.update(k.encode() + np.ascontiguousarray(p.arrays[k]).tobytes())
    return h.hexdigest()


def _run_digest(loaded) -> str:
    h = hashlib.sha256(json.dumps(loaded["config"].to_dict(), sort_keys=True).encode())
    for k, v in sorted(loaded["model"].state_dict().items()):
        h.update(k.encode() + v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


# -- structured mutations (return (files, repaired)) --------------------------------------------
INTERESTING_JSON = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63),
    10**30,
    1e308,
    -1e308,
    0.5,
    "",
    "x",
    "../x",
    [],
    [0],
    [0, 0],
    {},
    {"a": 1},
    [[[[[]]]]],
    "A" * 300,
]
INTERESTING_TOML = [
    "nan",
    "inf",
    "-inf",
    "0",
    "-1",
    "1",
    "2147483648",
    "9223372036854775807",
    "1e308",
    "-1e308",
    "0.0",
    '"x"',
    '""',
    "[]",
    "[0, 0]",
    "[1, 2, 3]",
    "{ a = 1 }",
    "true",
    "false",
    "[[[[1]]]]",
    "1" * 5000,
    '"none"',
    "1979-05-27T07:32:00Z",
    "0x7fffffff",
    "-0.0",
    "1e-400",
]
CONFIG_KEYS = [
    "model.name",
    "model.width",
    "model.input",
    "model.in_channels",
    "model.classes",
    "model.T",
    "model.plan",
    "quant.mode",
    "quant.weight_bits",
    "quant.first_bits",
    "quant.last_bits",
    "quant.membrane_lb",
    "quant.membrane_ub",
    "quant.membrane_k",
    "quant.tau",
    "quant.threshold",
    "quant.surrogate_param",
    "quant.prune.mass",
    "quant.prune.spatial_block",
    "quant.prune",
    "data.dataset",
    "data.train_subset",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.seed",
    "train.lam",
    "train.phi",
    "train.momentum",
    "train.threshold_lr",
    "train.max_steps",
    "run.log_every",
    "run.keep_checkpoints",
    "run.threads",
    "name",
    "description",
    "model",
    "quant",
    "variants",
    "task",
    "x.y.z",
    "model.T.x",
    "train",
]


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield from _json_paths(v, prefix + (i,))


def _json_edit(rng: random.Random, obj):
    paths = [p for p in _json_paths(obj) if p]
    path = rng.choice(paths)
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    op = rng.random()
    if op < 0.75:
        parent[path[-1]] = (
            rng.choice(INTERESTING_JSON) if rng.random() < 0.8 else _nudge(rng, parent[path[-1]])
        )
    elif op < 0.9 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        node = parent[path[-1]]
        if isinstance(node, dict):
            node[rng.choice(["x", "extra", "0"])] = rng.choice(INTERESTING_JSON)
        else:
            parent[path[-1]] = [node, node] if rng.random() < 0.5 else {"v": node}
    return obj


def _nudge(rng, v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + rng.choice([-1, 1, -(2**31), 2**31, 1 << 40])
    if isinstance(v, float):
        return rng.choice([v * 2, -v, v + 1e-3, float("nan"), float("inf")])
    if isinstance(v, str):
        return v[:-1] if v else "x"
    return v


SPQ_HEADER = struct.Struct("<4sHHIIQ")


def _spq_split(data: bytes):
    magic, major, minor, mlen, mcrc, blen = SPQ_HEADER.unpack_from(data)
    man = json.loads(data[SPQ_HEADER.size : SPQ_HEADER.size + mlen])
    return (magic, major, minor), man, data[SPQ_HEADER.size + mlen :]


def _spq_join(head, man, body: bytes) -> bytes:
    m = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()
    return SPQ_HEADER.pack(head[0], head[1], head[2], len(m), zlib.crc32(m), len(body)) + m + body


def spq_manifest_edit(rng, files):
    name = next(iter(files))
    head, man, body = _spq_split(files[name])
    return {name: _spq_join(head, _json_edit(rng, man), body)}, True


def spq_blob_edit(rng, files):
    """Change blob bytes and repair their CRC (reaches the value-range checks)."""
    name = next(iter(files))
    head, man, body = _spq_split(files[name])
    body = bytearray(body)
    blob = rng.choice(sorted(man["blobs"]))
    b = man["blobs"][blob]
    if b["nbytes"]:
        for _ in range(rng.randint(1, 4)):
            i = b["offset"] + rng.randrange(b["nbytes"])
            body[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        b["crc32"] = zlib.crc32(bytes(body[b["offset"] : b["offset"] + b["nbytes"]]))
    return {name: _spq_join(head, man, bytes(body))}, True


def _sidecar_name(files):
    return next(n for n in files if n.endswith(".json"))


def run_sidecar_edit(rng, files):
    """Edit the sidecar JSON without repairing the integrity hash: must be refused."""
    name = _sidecar_name(files)
    meta = json.loads(files[name])
    return {**files, name: (json.dumps(_json_edit(rng, meta), indent=1) + "\n").encode()}, False


def run_sidecar_forged(rng, files):
    """Edit the sidecar's config and recompute the integrity hash: reaches the config validator."""
    from spquant.train.checkpoint import _integrity

    name = _sidecar_name(files)
    meta = json.loads(files[name])
    cfg = meta["config"]
    if rng.random() < 0.7:
        sec = rng.choice([s for s in cfg if isinstance(cfg[s], dict)])
        key = rng.choice(sorted(cfg[sec]))
        cfg[sec][key] = rng.choice(INTERESTING_JSON) if rng.random() < 0.7 else _nudge(rng, cfg[sec][key])
    else:
        meta["config"] = (
            _json_edit(rng, {"c": cfg})["c"] if rng.random() < 0.5 else rng.choice(INTERESTING_JSON)
        )
    meta["integrity"] = _integrity(meta)
    return {**files, name: (json.dumps(meta, indent=1) + "\n").encode()}, True


def toml_value_edit(rng, files):
    name = next(iter(files))
    lines = files[name].decode("utf-8").splitlines()
    idx = [i for i, ln in enumerate(lines) if "=" in ln and not ln.lstrip().startswith("#")]
    op = rng.random()
    if op < 0.6 and idx:
        i = rng.choice(idx)
        key = lines[i].split("=", 1)[0]
        lines[i] = f"{key}= {rng.choice(INTERESTING_TOML)}"
    elif op < 0.8:
        sec, _, key = rng.choice(CONFIG_KEYS).rpartition(".")
        lines.append(f"[{sec or 'x'}]" if sec else "")
        lines.append(f"{key} = {rng.choice(INTERESTING_TOML)}")
    else:
        n = rng.choice([20, 200, 2000, 20000])
        lines.append(
            rng.choice(
                [
                    f"[{'a.' * n}a]",
                    f"x = {'[' * n}{']' * n}",
                    f"{'k.' * n}k = 1",
                    f"y = {{ {'a.' * n}b = 1 }}",
                    f"z = {'{ a = ' * min(n, 300)}1{' }' * min(n, 300)}",
                ]
            )
        )
    return {name: ("\n".join(lines) + "\n").encode()}, True


def overrides_edit(rng, files):
    name = next(iter(files))
    items = files[name].decode("utf-8", "replace").splitlines()
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(CONFIG_KEYS)
        val = rng.choice(INTERESTING_TOML) if rng.random() < 0.9 else rng.choice(["", "=", "[", "{", "'"])
        items.append(f"{key}={val}" if rng.random() < 0.95 else key)
    return {name: "\n".join(items).encode()}, True


def npy_row_edit(rng, files):
    """Set one box field of one row to an extreme value, keeping the file well-formed."""
    name = next(iter(files))
    arr = np.load(io.BytesIO(files[name]))
    i = rng.randrange(arr.shape[0])
    f = rng.choice(arr.dtype.names)
    kind = arr.dtype[f].kind
    vals = (
        [0, -1, 2**31, 1e30, np.nan, np.inf, -np.inf, -5.0]
        if kind == "f"
        else [0, -1, 255, 256, 2**31 - 1, -(2**31)]
    )
    with np.errstate(all="ignore"):
        try:
            arr[f][i] = rng.choice(vals)
        except (OverflowError, ValueError):
            arr[f][i] = 0
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return {name: buf.getvalue()}, True


def npy_dtype_edit(rng, files):
    """Rewrite the box array with another field type or shape (still a valid .npy)."""
    name = next(iter(files))
    arr = np.load(io.BytesIO(files[name]))
    descr = [(n, arr.dtype[n].str) for n in arr.dtype.names]
    i = rng.randrange(len(descr))
    descr[i] = (descr[i][0], rng.choice(["<i4", "<f8", "<u8", "|b1", "<f2", "<i8", "<c8", "|u1"]))
    new = np.zeros(arr.shape, dtype=descr)
    with np.errstate(all="ignore"):
        for n in arr.dtype.names:
            try:
                new[n] = arr[n]
            except (TypeError, ValueError):
                pass
    buf = io.BytesIO()
    np.save(buf, new if rng.random() < 0.8 else new.reshape(1, -1), allow_pickle=False)
    return {name: buf.getvalue()}, True


def idx_inner_edit(rng, files):
    """Mutate the decompressed IDX bytes and gzip them again (reaches the header checks)."""
    name = next(iter(files))
    data = bytearray(gzip.decompress(files[name]))
    pos = rng.randrange(0, min(len(data), 16))
    data[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return {name: gzip.compress(bytes(data), mtime=0)}, True


# -- generic byte mutations --------------------------------------------------------------------
def _flip(rng, b: bytearray):
    for _ in range(rng.choice([1, 1, 2, 4])):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)


def _set_byte(rng, b):
    b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x25, 0x0A, rng.randrange(256)])


def _insert(rng, b):
    i = rng.randrange(len(b) + 1)
    b[i:i] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 4, 8, 16])))


def _delete(rng, b):
    i = rng.randrange(len(b))
    del b[i : i + rng.choice([1, 2, 4, 8, 64])]


def _truncate(rng, b):
    del b[rng.randrange(len(b)) :]


def _length_field(rng, b):
    width = rng.choice([2, 4, 8])
    if len(b) < width:
        return _set_byte(rng, b)
    hi = min(len(b) - width, rng.choice([64, 256, len(b)]))
    i = rng.randrange(0, hi + 1)
    i -= i % rng.choice([1, width])
    val = rng.choice(
        [0, 1, (1 << (8 * width)) - 1, (1 << (8 * width - 1)) - 1, 1 << (8 * width - 1), 0x10000]
    )
    b[i : i + width] = (val % (1 << (8 * width))).to_bytes(width, rng.choice(["little", "big"]))


def _splice(rng, b):
    i, j = sorted(rng.randrange(len(b)) for _ in range(2))
    k = rng.randrange(len(b))
    b[k:k] = b[i : j + 1][:256]


BYTE_MUTATORS = {
    "flip": _flip,
    "set": _set_byte,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "length": _length_field,
    "splice": _splice,
}


def mutate(rng: random.Random, target: Target, files: dict[str, bytes]) -> tuple[dict[str, bytes], str, bool]:
    """One mutation of a seed: (files, mutator name, repaired) -- ``repaired``: checksums were fixed
    on purpose, so an accepted file may legitimately differ from the seed."""
    if target.structured and rng.random() < 0.35:
        fn = rng.choice(target.structured)
        try:
            out, repaired = fn(rng, dict(files))
            return out, fn.__name__, repaired
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, OSError, EOFError):
            pass  # the structured mutator does not apply to this seed; fall back to bytes
    name = rng.choice(sorted(n for n in files if files[n]))
    b = bytearray(files[name])
    mname = rng.choice(sorted(BYTE_MUTATORS))
    BYTE_MUTATORS[mname](rng, b)
    if not b and rng.random() < 0.5:
        b = bytearray()
    return {**files, name: bytes(b)}, f"{mname}:{name}", False


# ------------------------------------------------------------------------------------------------
# seeds (written by code)
# ------------------------------------------------------------------------------------------------
def _events(n: int, w: int, h: int, seed: int, t0: int = 0, span: int = 50_000):
    from spquant.data.events import make_events

    r = np.random.default_rng(seed)
    return make_events(
        r.integers(0, w, n), r.integers(0, h, n), np.sort(r.integers(t0, t0 + span, n)), r.integers(0, 2, n)
    )


def _file_bytes(write, name: str, *args, **kw) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, name)
        write(p, *args, **kw)
        with open(p, "rb") as f:
            return f.read()


def _pad(b: bytes, a: int) -> bytes:
    return b + b"\0" * (-len(b) % a)


def _aedat4_bytes(ev, size, stream_id=0, packet_events=32):
    """A minimal uncompressed AEDAT 4 file (IOHeader and EventPacket flatbuffers laid out by hand):
    its structure (magic, header length, packet lengths, XML stream description) is what the
    mutations attack; the aedat decoder reads it."""
    w, h = size
    xml = (
        f'<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        f'<node name="{stream_id}" path="/mainloop/Recorder/outInfo/{stream_id}/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalModuleName" type="string">spquant</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        f'<node name="info" path="/mainloop/Recorder/outInfo/{stream_id}/info/">'
        f'<attr key="sizeX" type="int">{w}</attr><attr key="sizeY" type="int">{h}</attr>'
        '<attr key="source" type="string">spquant</attr></node></node></node></dv>'
    ).encode()
    head = struct.pack("<I4sHHHHHH", 20, b"IOHE", 10, 20, 4, 12, 8, 0)
    head += struct.pack("<iiIq", 12, 0, 12, -1)
    head += _pad(struct.pack("<I", len(xml)) + xml + b"\0", 4)
    out = b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(head)) + head
    rec = np.zeros(len(ev), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])
    rec["t"], rec["x"], rec["y"], rec["on"] = ev["t"], ev["x"], ev["y"], ev["p"]
    for s in range(0, len(ev), packet_events):
        chunk = rec[s : s + packet_events]
        # root table at 16, after the identifier, two bytes of padding and its 6-byte vtable
        pkt = struct.pack("<I4sHHHHiII", 16, b"EVTS", 0, 6, 8, 4, 6, 4, len(chunk)) + chunk.tobytes()
        pkt = struct.pack("<I", len(pkt)) + pkt
        out += struct.pack("<iI", stream_id, len(pkt)) + pkt
    return out


def _cifar_pickle(n: int, protocol: int, label_array: bool, seed: int) -> bytes:
    r = np.random.default_rng(seed)
    labels = r.integers(0, 10, n)
    d = {
        b"batch_label": b"fuzz batch",
        b"labels": labels.astype(np.int64) if label_array else labels.tolist(),
        b"data": r.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"f%d.png" % i for i in range(n)],
    }
    return pickle.dumps(d, protocol=protocol)


def tiny_config(mode: str = "quant"):
    from spquant.train.config import load_config

    return load_config(
        "demo", [f"quant.mode={mode}", 'model.plan=[4, "A"]', "model.input=[8, 8]", "model.T=2"]
    )


def _spq_bytes() -> bytes:
    import torch

    from spquant.deploy.targets.spq import export

    torch.manual_seed(0)
    model = tiny_config("quant").build_model().eval()
    with torch.no_grad():
        model(torch.rand(2, 1, 1, 8, 8))  # settle BN/threshold buffers
    with tempfile.TemporaryDirectory() as d:
        export(model, os.path.join(d, "m.spq"), (1, 8, 8))
        return Path(d, "m.spq").read_bytes()


def _run_files() -> dict[str, bytes]:
    import torch

    from spquant.train.checkpoint import save_model

    torch.manual_seed(0)
    cfg = tiny_config("quant")
    model = cfg.build_model()
    with tempfile.TemporaryDirectory() as d:
        save_model(
            Path(d, "model.safetensors"), model, {"config": cfg.to_dict(), "metrics": {"test_accuracy": 0.5}}
        )
        return {n: Path(d, n).read_bytes() for n in ("model.safetensors", "model.json")}


def build_seeds() -> dict[str, Target]:
    """Every target with its seeds (small files written by spquant's own writers)."""
    from spquant.data import readers as rd
    from spquant.data.datasets import load_cifar10_batch
    from spquant.data.idx import read_idx, write_idx
    from spquant.deploy.targets.spq import load as load_spq
    from spquant.train import load_run
    from spquant.train.config import load_config

    targets: dict[str, Target] = {}

    def ev_target(name, fname, writer, sizes, kw_read=None):
        seeds = []
        for k, (w, h) in enumerate(sizes):
            ev = _events(40 + 20 * k, w, h, k, t0=k * 3_000_000, span=200_000 if k else 20_000)
            seeds.append({fname: _file_bytes(writer, fname, ev)})
        targets[name] = Target(
            name, seeds, fname, lambda p: rd.read_recording(p, **(kw_read or {})), _events_check
        )

    ev_target("atis_bin", "x.bin", rd.write_atis_bin, [(34, 34), (240, 180)], {"sensor_size": (240, 180)})
    ev_target("aedat2", "x.aedat", rd.write_aedat2, [(128, 128), (100, 60)])
    ev_target("aedat31", "x.aedat", rd.write_aedat31, [(128, 128), (64, 64)])
    try:
        import aedat  # noqa: F401

        a4 = [
            {"x.aedat4": _aedat4_bytes(_events(40, 64, 48, 5), (64, 48), packet_events=16)},
            {"x.aedat4": _aedat4_bytes(_events(10, 320, 240, 6), (320, 240), stream_id=3)},
        ]
        targets["aedat4"] = Target("aedat4", a4, "x.aedat4", rd.read_recording, _events_check, weight=0.5)
    except ImportError:
        pass
    dat = []
    for k, (etype, size) in enumerate([(0, None), (0, (304, 240)), (12, (1280, 720))]):
        ev = _events(50, *(size or (304, 240)), k, t0=1000 * k)
        dat.append({"x.dat": _file_bytes(rd.write_prophesee_dat, "x.dat", ev, size, event_type=etype)})
    targets["prophesee_dat"] = Target("prophesee_dat", dat, "x.dat", rd.read_recording, _events_check)
    raw = []
    if hasattr(rd, "write_evt2_raw"):
        for k, (writer, size) in enumerate(
            [
                (rd.write_evt2_raw, (640, 480)),
                (rd.write_evt3_raw, (640, 480)),
                (rd.write_evt3_raw, (1280, 720)),
            ]
        ):
            ev = _events(60, *size, 10 + k, t0=100 * k, span=30_000)
            raw.append({"x.raw": _file_bytes(writer, "x.raw", ev, size)})
        targets["metavision_raw"] = Target("metavision_raw", raw, "x.raw", rd.read_recording, _events_check)

    labels_csv = b"class,startTime_usec,endTime_usec\n1,100,2000\n11,2500,9000\n4,9000,12000\n"
    targets["gesture_labels"] = Target(
        "gesture_labels",
        [{"u_labels.csv": labels_csv}],
        "u_labels.csv",
        rd.read_gesture_labels,
        _labels_check,
        weight=0.3,
    )

    r = np.random.default_rng(3)
    boxes = np.zeros(6, rd.prophesee.BOX_DTYPE)
    boxes["ts"], boxes["x"], boxes["y"] = (
        np.sort(r.integers(0, 10**6, 6)),
        r.uniform(0, 300, 6),
        r.uniform(0, 200, 6),
    )
    boxes["w"], boxes["h"], boxes["class_id"] = r.uniform(5, 50, 6), r.uniform(5, 50, 6), r.integers(0, 2, 6)
    old = np.zeros(
        3, [("t", "<u8"), ("x", "<f8"), ("y", "<f8"), ("w", "<f8"), ("h", "<f8"), ("class_id", "<i4")]
    )
    old["t"], old["w"], old["h"], old["class_id"] = [5, 1, 9], 3.0, 4.0, [0, 1, 0]
    bseeds = [{"x_bbox.npy": _file_bytes(rd.write_gen1_boxes, "x_bbox.npy", boxes)}]
    buf = io.BytesIO()
    np.save(buf, old, allow_pickle=False)
    bseeds.append({"x_bbox.npy": buf.getvalue()})
    targets["gen1_boxes"] = Target(
        "gen1_boxes",
        bseeds,
        "x_bbox.npy",
        rd.read_gen1_boxes,
        _boxes_check,
        structured=[npy_row_edit, npy_dtype_edit],
    )

    imgs = r.integers(0, 256, (3, 6, 5), dtype=np.uint8)
    targets["idx"] = Target(
        "idx",
        [
            {"x-idx3-ubyte": _file_bytes(write_idx, "x-idx3-ubyte", imgs)},
            {"x-idx1-ubyte": _file_bytes(write_idx, "x-idx1-ubyte", np.arange(7, dtype=np.uint8))},
            {"x-idx2-float": _file_bytes(write_idx, "x-idx2-float", np.ones((2, 3), np.float32))},
        ],
        "*",
        None,
    )
    targets["idx_gz"] = Target(
        "idx_gz",
        [{"x-idx3-ubyte.gz": _file_bytes(write_idx, "x-idx3-ubyte.gz", imgs)}],
        "x-idx3-ubyte.gz",
        read_idx,
        structured=[idx_inner_edit],
    )
    targets["idx"].load = read_idx

    targets["cifar10"] = Target(
        "cifar10",
        [
            {"data_batch_1": _cifar_pickle(2, 2, False, 0)},
            {"data_batch_1": _cifar_pickle(2, 4, True, 1)},
            {"data_batch_1": _cifar_pickle(1, 2, True, 2)},
        ],
        "data_batch_1",
        load_cifar10_batch,
        _cifar_check,
    )

    targets["spq"] = Target(
        "spq",
        [{"m.spq": _spq_bytes()}],
        "m.spq",
        load_spq,
        digest=_program_digest,
        structured=[spq_manifest_edit, spq_blob_edit],
        weight=0.6,
    )

    from importlib import resources

    recipes = [
        {"r.toml": (resources.files("spquant") / "configs" / f"{n}.toml").read_bytes()}
        for n in ("demo", "mnist")
    ]
    targets["recipe"] = Target(
        "recipe", recipes, "r.toml", lambda p: load_config(p), _config_check, structured=[toml_value_edit]
    )
    targets["overrides"] = Target(
        "overrides",
        [{"set.txt": b"train.lr=3e-4\nmodel.input=[32,32]\nquant.mode=quant"}],
        "set.txt",
        lambda p: load_config("demo", Path(p).read_text(errors="replace").splitlines()),
        _config_check,
        structured=[overrides_edit],
    )

    targets["run"] = Target(
        "run",
        [_run_files()],
        ".",
        lambda d: load_run(d),
        digest=_run_digest,
        structured=[run_sidecar_edit, run_sidecar_forged],
        weight=0.4,
    )
    targets["run"].main = "."  # load_run takes the folder
    return targets


# ------------------------------------------------------------------------------------------------
# running one case (in the worker)
# ------------------------------------------------------------------------------------------------
class CaseTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout()


def make_case(targets: dict[str, Target], names: list[str], weights: list[float], seed: int, i: int):
    rng = random.Random(f"{seed}:{i}")
    tname = rng.choices(names, weights)[0]
    t = targets[tname]
    base = rng.choice(t.seeds)
    files, mname, repaired = mutate(rng, t, base)
    return t, base, files, mname, repaired


def _write_case(folder: Path, files: dict[str, bytes]) -> None:
    for old in folder.iterdir():
        old.unlink()
    for n, b in files.items():
        (folder / n).write_bytes(b)


def _mem_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _main_path(t: Target, folder: Path, files: dict[str, bytes]) -> Path:
    if t.main == ".":
        return folder
    return folder / (next(iter(files)) if t.main == "*" else t.main)


def run_case(t: Target, base, files, repaired, folder: Path, timeout: float, seed_digests: dict) -> dict:
    from spquant.errors import SpquantError

    _write_case(folder, files)
    path = _main_path(t, folder, files)
    _reset_peak()
    rss0 = _mem_kib("VmRSS:")
    rec = {"outcome": "ok"}
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        res = t.load(path)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if t.check is not None:
            try:
                t.check(res)
            except (AssertionError, SpquantError) as e:
                rec = {"outcome": "silent", "exc": "invariant", "msg": str(e)[:300]}
        if rec["outcome"] == "ok" and t.digest is not None and not repaired and files != base:
            if t.digest(res) != seed_digests[id(base)]:
                rec = {
                    "outcome": "silent",
                    "exc": "changed",
                    "msg": "a modified file loaded to a different result",
                }
    except CaseTimeout:
        rec = {"outcome": "hang", "exc": "timeout"}
    except MemoryError:
        signal.setitimer(signal.ITIMER_REAL, 0)
        rec = {"outcome": "memory", "exc": "MemoryError"}
    except SpquantError as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        rec = {"outcome": "error", "exc": type(e).__name__, "msg": str(e)[:200]}
    except BaseException as e:  # noqa: BLE001 - classifying everything is the point
        signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)
        where = next(
            (f"{Path(fr.filename).name}:{fr.lineno}" for fr in reversed(tb) if "spquant" in fr.filename), ""
        )
        rec = {"outcome": "unclear", "exc": type(e).__name__, "msg": f"{str(e)[:200]} @ {where}"}
    rec["peak_kib"] = max(0, _mem_kib("VmHWM:") - rss0)
    rec["size"] = sum(len(b) for b in files.values())
    return rec


# ------------------------------------------------------------------------------------------------
# the worker pool (one forked worker, restarted on crash / hang)
# ------------------------------------------------------------------------------------------------
def _worker(wfd: int, targets, names, weights, seed, start, stop, timeout, mem_mb, keep_dir):
    if keep_dir:
        os.makedirs(keep_dir, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    os.environ["RUST_BACKTRACE"] = "0"  # a decoder panic should not load debug symbols (tens of MiB)
    log = os.open(
        os.path.join(keep_dir, "worker-stderr.log") if keep_dir else os.devnull,
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o644,
    )
    os.dup2(log, 2)  # panic messages of native decoders
    import faulthandler

    faulthandler.disable()  # a crash is an expected outcome here, reported by the parent
    signal.signal(signal.SIGALRM, _on_alarm)
    folder = Path(tempfile.mkdtemp(prefix="spq-fuzz-"))
    seed_digests = {}
    for t in targets.values():
        for s in t.seeds:
            if t.digest is not None:
                _write_case(folder, s)
                seed_digests[id(s)] = t.digest(t.load(_main_path(t, folder, s)))
    vm = _mem_kib("VmSize:") * 1024
    if mem_mb:
        limit = vm + mem_mb * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = os.fdopen(wfd, "w", buffering=1)
    for i in range(start, stop):
        t, base, files, mname, repaired = make_case(targets, names, weights, seed, i)
        out.write(json.dumps({"i": i, "target": t.name, "mut": mname, "start": True}) + "\n")
        rec = run_case(t, base, files, repaired, folder, timeout, seed_digests)
        rec.update({"i": i, "target": t.name, "mut": mname})
        if rec["outcome"] in BAD and keep_dir:
            d = Path(keep_dir) / f"{rec['outcome']}-{t.name}-{i}"
            d.mkdir(parents=True, exist_ok=True)
            for n, b in files.items():
                (d / n).write_bytes(b)
        out.write(json.dumps(rec) + "\n")
    out.close()
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


def run_fuzz(
    cases: int,
    seed: int = 0,
    targets: dict[str, Target] | None = None,
    only: list[str] | None = None,
    timeout: float = 10.0,
    mem_mb: int = 1024,
    keep_dir: str | None = None,
    progress: bool = False,
) -> dict:
    """Run ``cases`` mutation cases; returns {"counts": {target: Counter}, "findings": [...], "peak": {...}}."""
    targets = targets or build_seeds()
    names = sorted(n for n in targets if not only or n in only)
    weights = [targets[n].weight for n in names]
    counts = {n: collections.Counter() for n in names}
    peak = {n: [0, 0] for n in names}  # max growth KiB, size of that input
    ratio = {n: 0.0 for n in names}
    findings = []
    i = 0
    t_start = time.time()
    while i < cases:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            os.close(r)
            try:
                _worker(w, targets, names, weights, seed, i, cases, timeout, mem_mb, keep_dir)
            finally:
                os._exit(1)
        os.close(w)
        buf = b""
        current = None
        dead = None
        with os.fdopen(r, "rb", buffering=0) as rf:
            while True:
                ready, _, _ = select.select([rf], [], [], timeout * 3 + 5)
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    dead = "hang"
                    break
                chunk = rf.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    rec = json.loads(line)
                    if rec.get("start"):
                        current = rec
                        continue
                    current = None
                    counts[rec["target"]][rec["outcome"]] += 1
                    if rec["peak_kib"] > peak[rec["target"]][0]:
                        peak[rec["target"]] = [rec["peak_kib"], rec["size"]]
                    if rec["size"]:
                        ratio[rec["target"]] = max(
                            ratio[rec["target"]], rec["peak_kib"] * 1024 / max(rec["size"], 1)
                        )
                    if rec["outcome"] in BAD:
                        findings.append(rec)
                    i = rec["i"] + 1
                    if progress and i % 1000 == 0:
                        print(f"  {i} cases, {time.time() - t_start:.0f} s", file=sys.stderr, flush=True)
        _, status = os.waitpid(pid, 0)
        if current is not None:  # the worker died or hung inside a case
            if dead is None:
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                dead = "crash"
                current["msg"] = f"signal {sig}" if sig else f"exit status {os.WEXITSTATUS(status)}"
            counts[current["target"]][dead] += 1
            current["outcome"] = dead
            current.pop("start", None)
            findings.append(current)
            if keep_dir:
                t, _, files, _, _ = make_case(targets, names, weights, seed, current["i"])
                d = Path(keep_dir) / f"{dead}-{t.name}-{current['i']}"
                d.mkdir(parents=True, exist_ok=True)
                for n, b in files.items():
                    (d / n).write_bytes(b)
            i = current["i"] + 1
        elif dead == "hang" or os.WIFSIGNALED(status) or os.WEXITSTATUS(status):
            raise RuntimeError(f"fuzz worker failed outside a case (status {status}, {dead})")
    return {
        "counts": counts,
        "findings": findings,
        "peak_kib": peak,
        "peak_ratio": ratio,
        "seconds": time.time() - t_start,
        "cases": cases,
        "seed": seed,
    }


def format_report(res: dict) -> str:
    lines = [
        f"{res['cases']} cases, seed {res['seed']}, {res['seconds']:.0f} s",
        f"{'loader':<16}" + "".join(f"{o:>9}" for o in OUTCOMES) + f"{'peak MiB':>10}{'at input B':>12}"
        f"{'max growth/input':>17}",
    ]
    total = collections.Counter()
    for n, c in res["counts"].items():
        total.update(c)
        pk, size = res["peak_kib"][n]
        lines.append(
            f"{n:<16}" + "".join(f"{c[o]:>9}" for o in OUTCOMES) + f"{pk / 1024:>10.1f}{size:>12}"
            f"{res['peak_ratio'][n]:>17.0f}"
        )
    lines.append(f"{'total':<16}" + "".join(f"{total[o]:>9}" for o in OUTCOMES))
    for f in res["findings"][:40]:
        lines.append(
            f"  {f['outcome']:<8} {f['target']:<14} case {f['i']:<7} {f['mut']:<24} {f.get('exc', '')} "
            f"{f.get('msg', '')[:160]}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targets", default="", help="comma-separated subset of loaders")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--mem-mb", type=int, default=1024, help="address-space headroom of the worker (MiB)")
    ap.add_argument("--out", default="", help="folder for the findings' files and report.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = run_fuzz(
        args.cases,
        args.seed,
        only=[s for s in args.targets.split(",") if s] or None,
        timeout=args.timeout,
        mem_mb=args.mem_mb,
        keep_dir=args.out or None,
        progress=True,
    )
    report = format_report(res)
    print(report)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "report.txt").write_text(report + "\n")
        Path(args.out, "report.json").write_text(
            json.dumps(
                {**res, "counts": {k: dict(v) for k, v in res["counts"].items()}}, indent=1, default=str
            )
        )
    return 1 if any(res["counts"][n][o] for n in res["counts"] for o in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
