"""One minimal hostile file (written by code) per kind of fuzz finding: each must now raise the
project's error naming the file and the fault, before any large allocation."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import stat
import struct
import zlib

import numpy as np
import pytest

from spquant.data import readers as rd
from spquant.data.datasets import load_cifar10_batch
from spquant.data.events import make_events
from spquant.data.idx import read_idx
from spquant.errors import CheckpointError, ConfigError, EventFileError, ModelFileError, SpquantError
from spquant.train.config import load_config

fuzz = pytest.importorskip("benchmarks.fuzz")


# ------------------------------------------------------------------------------ CIFAR-10 batches
class _Reduce:
    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _ndarray_pickle(shape, dtype_code, raw, dtype_state=None) -> bytes:
    from numpy.core.multiarray import _reconstruct

    dt = _Reduce(np.dtype, (dtype_code, False, True), dtype_state or (3, "|", None, None, None, -1, -1, 0))
    arr = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dt, False, raw))
    return pickle.dumps({b"data": arr, b"labels": [0]}, protocol=2)


CIFAR_CASES = {
    # a numpy object array whose stored list is shorter than its shape (SIGSEGV before)
    "object_dtype_short_list": (_ndarray_pickle((1000,), "O", [1, 2]), "integer dtypes only"),
    # a datetime dtype with odd flags (SIGSEGV / hang before)
    "datetime_dtype_flags": (
        _ndarray_pickle(
            (1, 3072), "M8", b"\0" * 8 * 3072, (4, "<", None, None, None, -1, -1, 0xFFFF, (b"D", 1, 1, 1))
        ),
        "integer dtypes only",
    ),
    "raw_shorter_than_shape": (_ndarray_pickle((1, 3072), "u1", b"\0" * 10), "needs 3072 bytes"),
    "codecs_unknown_encoding": (
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x08\x00\x00\x00no-codec\x86R.",
        "latin-1",
    ),
    "huge_bytes_length": (b"\x80\x04B\xff\xff\xff\x7f" + b"\0" * 16, "corrupt pickle"),
    "labels_out_of_range": (
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, protocol=2),
        "0..9",
    ),
    "labels_negative_array": (
        pickle.dumps(
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": np.array([-1], np.int64)}, protocol=2
        ),
        "0..9",
    ),
    "not_a_dict": (pickle.dumps([1, 2, 3], protocol=2), "does not hold a dict"),
}


@pytest.mark.parametrize("name", sorted(CIFAR_CASES))
def test_cifar_batch_hostile(tmp_path, name):
    data, match = CIFAR_CASES[name]
    p = tmp_path / "data_batch_1"
    p.write_bytes(data)
    with pytest.raises(EventFileError, match=match) as e:
        load_cifar10_batch(p)
    assert str(p) in str(e.value)


def test_cifar_batch_real_layout_still_loads(tmp_path):
    for protocol in (2, 4):
        p = tmp_path / f"b{protocol}"
        p.write_bytes(fuzz._cifar_pickle(3, protocol, protocol == 4, 0))
        x, y = load_cifar10_batch(p)
        assert x.shape == (3, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64


# ------------------------------------------------------------------------------ Gen1 boxes
def _npy(arr) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()


def _boxes(**over):
    b = np.zeros(
        2, [("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "<i4")]
    )
    b["t"], b["w"], b["h"] = [1, 2], 3.0, 4.0
    for k, v in over.items():
        b[k][0] = v
    return _npy(b)


def _header_rows(rows: int) -> bytes:
    data = bytearray(_boxes())
    text = data[10 : 10 + struct.unpack_from("<H", data, 8)[0]].decode("latin-1")
    text = text.replace("(2,)", f"({rows},)")
    head = text.encode("latin-1")
    return bytes(data[:8]) + struct.pack("<H", len(head)) + head + bytes(data[10 + len(head) :])


BOX_CASES = {
    "empty_file": (b"", "not a .npy"),
    "npz_under_box_name": (b"PK\x03\x04" + b"\0" * 60, "npz"),
    "tokenize_error_header": (b"\x93NUMPY\x01\x00\x10\x00{'descr': '''\n", "corrupt .npy header"),
    "rows_1e12_in_small_file": (_header_rows(10**12), "declares 1000000000000 rows"),
    "class_id_wraps_uint8": (_boxes(class_id=300), "class_id"),
    "negative_t": (_boxes(t=-5), "'ts'"),
    "nan_width": (_boxes(w=np.nan), "NaN"),
    "negative_height": (_boxes(h=-1.0), "negative"),
    "inf_x": (_boxes(x=np.inf), "NaN or infinite"),
    "object_dtype": (None, "not a Gen1 box array"),
}


@pytest.mark.parametrize("name", sorted(BOX_CASES))
def test_gen1_boxes_hostile(tmp_path, name):
    data, match = BOX_CASES[name]
    p = tmp_path / "x_bbox.npy"
    if data is None:
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        p.write_bytes(data)
    with pytest.raises(EventFileError, match=match) as e:
        rd.read_gen1_boxes(p)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------------------ event files
def _aedat4_with_length(which: str) -> bytes:
    b = bytearray(fuzz._aedat4_bytes(make_events([1, 2], [3, 4], [10, 20], [1, 0]), (64, 48)))
    hlen = struct.unpack_from("<I", b, 14)[0]
    pos = 14 if which == "header" else 18 + hlen + 4
    b[pos : pos + 4] = b"\xff\xff\xff\xff"
    return bytes(b)


def _aedat31_bit31() -> bytes:
    raw = bytearray(
        fuzz._file_bytes(rd.write_aedat31, "a.aedat", make_events([1, 2], [3, 4], [10, 20], [1, 0]))
    )
    end = raw.index(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
    raw[end + 28 + 4 + 3] |= 0x80  # bit 31 of the first event's int32 timestamp
    return bytes(raw)


def _dat_huge_width() -> bytes:
    raw = fuzz._file_bytes(rd.write_prophesee_dat, "a.dat", make_events([1], [2], [3], [1]), (304, 240))
    return raw.replace(b"% Width 304", b"% Width 99999999999999999999")


EVENT_CASES = {
    "aedat4_header_length_max": (
        "x.aedat4",
        lambda: _aedat4_with_length("header"),
        "header length 4294967295",
    ),
    "aedat4_packet_length_max": (
        "x.aedat4",
        lambda: _aedat4_with_length("packet"),
        "declares 4294967295 bytes",
    ),
    "aedat31_timestamp_bit31": ("x.aedat", _aedat31_bit31, "bit 31"),
    "dat_width_huge": ("x.dat", _dat_huge_width, "14-bit"),
}


@pytest.mark.parametrize("name", sorted(EVENT_CASES))
def test_event_files_hostile(tmp_path, name):
    fname, make, match = EVENT_CASES[name]
    if fname.endswith(".aedat4"):
        pytest.importorskip("aedat")
    p = tmp_path / fname
    p.write_bytes(make())
    with pytest.raises(EventFileError, match=match) as e:
        rd.read_recording(p)
    assert str(p) in str(e.value)


LABEL_CASES = {
    "non_utf8": (b"class,startTime_usec,endTime_usec\n1,1\xa7,2\n", "not UTF-8"),
    "integer_beyond_int64": (b"class,startTime_usec,endTime_usec\n1,1,1" + b"0" * 30 + b"\n", "huge"),
    "ragged_row": (b"class,startTime_usec,endTime_usec\n1,1\n", "exactly 3 fields"),
    "negative_time": (b"class,startTime_usec,endTime_usec\n1,-5,10\n", "negative"),
}


@pytest.mark.parametrize("name", sorted(LABEL_CASES))
def test_gesture_labels_hostile(tmp_path, name):
    data, match = LABEL_CASES[name]
    p = tmp_path / "user01_labels.csv"
    p.write_bytes(data)
    with pytest.raises(EventFileError, match=match) as e:
        rd.read_gesture_labels(p)
    assert str(p) in str(e.value)


def test_aedat4_non_utf8_stream_description_in_a_subprocess(tmp_path):
    """The aedat decoder aborts the process (SIGABRT) on a stream description that is not UTF-8;
    the reader must refuse it first. Run in a subprocess so a regression cannot kill the suite."""
    import subprocess
    import sys

    pytest.importorskip("aedat")
    data = fuzz._aedat4_bytes(make_events([1, 2], [3, 4], [10, 20], [1, 0]), (64, 48))
    p = tmp_path / "x.aedat4"
    p.write_bytes(data.replace(b"originalModuleName", b"originalModule\xe1ame", 1))
    code = (
        "import sys\nfrom spquant.data.readers import read_recording\nfrom spquant.errors import EventFileError\n"
        "try:\n    read_recording(sys.argv[1])\nexcept EventFileError as e:\n    print(e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(p)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RUST_BACKTRACE": "0"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not UTF-8" in r.stdout and str(p) in r.stdout


# ------------------------------------------------------------------------------ IDX
def test_idx_gzip_header_checked_before_inflating(tmp_path):
    """A gzip whose IDX header declares 256 MiB of pixels is refused from the header and the file size."""
    p = tmp_path / "x-idx3-ubyte.gz"
    head = bytes([0, 0, 8, 3]) + np.array([65536, 64, 64], ">u4").tobytes()
    p.write_bytes(gzip.compress(head + bytes(4096), mtime=0))
    with pytest.raises(EventFileError, match="more than a .*gzip file can hold"):
        read_idx(p)
    q = tmp_path / "y-idx1-ubyte.gz"  # plausible header, body cut short: read only what is declared
    q.write_bytes(
        gzip.compress(bytes([0, 0, 8, 1]) + np.array([5000], ">u4").tobytes() + bytes(100), mtime=0)
    )
    with pytest.raises(EventFileError, match="truncated"):
        read_idx(q)


# ------------------------------------------------------------------------------ .spq manifests
def _spq_with(edit) -> bytes:
    head, man, body = fuzz._spq_split(fuzz._spq_bytes())
    edit(man)
    return fuzz._spq_join(head, man, body)


def _conv(man):
    return next(n for n in man["nodes"] if n["op"] in ("conv", "linear"))


SPQ_CASES = {
    "op_is_a_list": (lambda m: _conv(m).__setitem__("op", ["conv"]), "unknown op"),
    "weight_ref_is_an_object": (lambda m: _conv(m).__setitem__("weight", {}), "blob"),
    "meta_is_a_list": (lambda m: m.__setitem__("meta", []), "meta"),
    "nodes_hold_a_string": (lambda m: m.__setitem__("nodes", ["x"]), "not an object"),
}


@pytest.mark.parametrize("name", sorted(SPQ_CASES))
def test_spq_manifest_wrong_json_types(tmp_path, name):
    from spquant.deploy.targets.spq import load

    edit, match = SPQ_CASES[name]
    p = tmp_path / "m.spq"
    p.write_bytes(_spq_with(edit))
    with pytest.raises(ModelFileError, match=match):
        load(p)


def test_spq_manifest_integer_of_5000_digits(tmp_path):
    from spquant.deploy.targets.spq import HEADER, load

    data = fuzz._spq_bytes()
    _, major, minor, mlen, _, blen = HEADER.unpack_from(data)
    man = data[HEADER.size : HEADER.size + mlen].replace(
        b'"frac_bits":', b'"frac_bits":' + b"9" * 5000 + b',"x":', 1
    )
    p = tmp_path / "m.spq"
    p.write_bytes(
        HEADER.pack(b"SPQM", major, minor, len(man), zlib.crc32(man), blen) + man + data[HEADER.size + mlen :]
    )
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(p)


# ------------------------------------------------------------------------------ recipes
RECIPE_CASES = {
    "non_utf8": (b'name = "a\xff"\n', "not UTF-8"),
    "deep_nesting": (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "deeper than"),
    "integer_of_20000_digits": (b"[train]\nseed = " + b"7" * 20000 + b"\n", "invalid TOML"),
    "dotted_header_120k_parts": (b"[" + b"a." * 120_000 + b"a]\n", "dotted key"),
    "section_not_a_table": (b"model = 3\n", "must be a table"),
    "variants_not_tables": (b"[variants]\nq = 3\n", "variants"),
}


@pytest.mark.parametrize("name", sorted(RECIPE_CASES))
def test_recipe_text_hostile(tmp_path, name):
    text, match = RECIPE_CASES[name]
    p = tmp_path / "r.toml"
    p.write_bytes(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(p)
    assert str(p) in str(e.value)


VALUE_CASES = {
    "train.lr=nan": "finite|must be > 0",
    "train.lr=inf": "finite",
    "model.width=inf": "finite",
    "model.input=[0,0]": "outside the allowed range",
    "model.T=4294967296": "outside the allowed range",
    "quant.membrane_ub=2147483648": "outside the allowed range",
    "quant.backend=referenc": "backend",
    "train.seed=-1": "outside the allowed range",
    "quant.tau=1.5": "outside the allowed range",
}


@pytest.mark.parametrize("item", sorted(VALUE_CASES))
def test_recipe_values_range_checked(item):
    with pytest.raises(ConfigError, match=VALUE_CASES[item]):
        load_config("demo", [item])


def test_recipe_membrane_lb_must_be_below_ub():
    with pytest.raises(ConfigError, match="membrane_lb .* must be below"):
        load_config("demo", ["quant.membrane_lb=0", "quant.membrane_ub=0"])


@pytest.mark.parametrize(
    "items",
    [["model=3", "model.T=2"], ["train.lr.x=1"], ["model.T.x.y=1"], ["model." + ".".join(["a"] * 40) + "=1"]],
)
def test_set_on_a_non_table(items):
    with pytest.raises(ConfigError):
        load_config("demo", items)


# ------------------------------------------------------------------------------ run folders
@pytest.fixture
def run_dir(tmp_path):
    for n, b in fuzz._run_files().items():
        (tmp_path / n).write_bytes(b)
    return tmp_path


def _sidecar(run_dir):
    return json.loads((run_dir / "model.json").read_text())


def _write_sidecar(run_dir, meta, reseal: bool):
    from spquant.train.checkpoint import _integrity

    if reseal:
        meta["integrity"] = _integrity(meta)
    (run_dir / "model.json").write_text(json.dumps(meta, indent=1))


@pytest.mark.parametrize("edit", ["model.T", "quant.membrane_ub", "train.lr", "metrics"])
def test_run_sidecar_edit_is_detected(run_dir, edit):
    from spquant.train import load_run

    meta = _sidecar(run_dir)
    if edit == "metrics":
        meta["metrics"]["test_accuracy"] = 0.99
    else:
        sec, key = edit.split(".")
        meta["config"][sec][key] = meta["config"][sec][key] * 2
    _write_sidecar(run_dir, meta, reseal=False)
    with pytest.raises(CheckpointError, match="integrity hash mismatch"):
        load_run(run_dir)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.pop("config"), "no config"),
        (lambda m: m["config"]["model"].__setitem__("T", 2**32), "outside the allowed range"),
        (lambda m: m["config"]["quant"].__setitem__("membrane_ub", 2**31), "outside the allowed range"),
        (lambda m: m["config"].__setitem__("model", [1, 2]), "must be a table"),
        (lambda m: m.__setitem__("step", "x"), "step"),
        (lambda m: m.__setitem__("tensors", "../../etc/passwd"), "plain"),
        # a bigger model than the tensors hold is refused before it is allocated
        (lambda m: m["config"]["model"].__setitem__("classes", 100_000), "describes a model of"),
        (lambda m: m["config"]["model"].__setitem__("plan", [60_000, "A"]), "describes a model of"),
    ],
)
def test_run_sidecar_forged_is_validated_like_a_recipe(run_dir, edit, match):
    """Even with a recomputed integrity hash, the sidecar's config goes through the recipe validator."""
    from spquant.train import load_run

    meta = _sidecar(run_dir)
    edit(meta)
    _write_sidecar(run_dir, meta, reseal=True)
    with pytest.raises(SpquantError, match=match):
        load_run(run_dir)


def test_run_tensor_header_edit_with_matching_hashes(run_dir):
    """A safetensors header whose shape was edited (and both hashes recomputed) is a clean error."""
    import hashlib

    from spquant.train import load_run

    blob = bytearray((run_dir / "model.safetensors").read_bytes())
    n = struct.unpack_from("<Q", blob, 0)[0]
    head = blob[8 : 8 + n].decode()
    head = head.replace('"shape":[', '"shape":[99999999,', 1)
    blob = struct.pack("<Q", len(head)) + head.encode() + blob[8 + n :]
    (run_dir / "model.safetensors").write_bytes(blob)
    meta = _sidecar(run_dir)
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    _write_sidecar(run_dir, meta, reseal=True)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_run(run_dir)


def test_latest_checkpoint_skips_tampered(tmp_path):
    import torch

    from spquant.train.checkpoint import latest_checkpoint, save_checkpoint

    cfg = fuzz.tiny_config("fp32")
    model = cfg.build_model()
    opt = torch.optim.Adam(model.parameters())
    for step in (1, 2):
        save_checkpoint(
            tmp_path,
            step,
            model,
            opt,
            {"epoch": 0, "step_in_epoch": step, "global_step": step},
            cfg.to_dict(),
        )
    newest = tmp_path / "checkpoints" / "step-00000002.json"
    meta = json.loads(newest.read_text())
    meta["step"] = 7
    newest.write_text(json.dumps(meta))
    assert latest_checkpoint(tmp_path).name == "step-00000001.json"


# ------------------------------------------------------------------------------ CLI and writes
def test_cli_errors_are_one_line_and_status_2(tmp_path, capsys, run_dir):
    from spquant.cli import main

    bad = tmp_path / "bad.spq"
    bad.write_bytes(b"SPQM" + bytes(30))
    meta = _sidecar(run_dir)
    meta["config"]["model"]["T"] = 3
    _write_sidecar(run_dir, meta, reseal=False)
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(b'name = "\xff"')
    ev = tmp_path / "e.aedat"
    ev.write_bytes(_aedat31_bit31())
    commands = [
        ["run", str(bad), "--data", "mnist-embedded", "--limit", "2"],
        ["eval", str(run_dir)],
        ["export", str(run_dir), "-o", str(tmp_path / "out.spq")],
        ["train", "--config", str(recipe), "--out", str(tmp_path / "r")],
        ["data", "info", str(ev)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "error" in err, (argv, err)
    assert not (tmp_path / "out.spq").exists() and not list(tmp_path.glob(".out.spq*"))


def test_atomic_writes_keep_umask_permissions(tmp_path):
    from spquant.deploy.targets.spq import save
    from spquant.fileio import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o640
        from spquant.deploy.targets.spq import loads

        save(loads(fuzz._spq_bytes()), tmp_path / "m.spq")
        assert stat.S_IMODE(os.stat(tmp_path / "m.spq").st_mode) == 0o640
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))
