"""The ``.spq`` integer model file: read, write, validate. Layout in docs/deploy_format.md.

::

    offset  size  field
    0       4     magic b"SPQM"
    4       2     format major version (uint16 LE) = 1
    6       2     format minor version (uint16 LE) = 0
    8       4     manifest length in bytes (uint32 LE)
    12      4     CRC-32 of the manifest bytes (uint32 LE)
    16      8     blob section length in bytes (uint64 LE)
    24      -     manifest: UTF-8 JSON (no code, no pickle)
    24+L    -     blob section: the blobs named in the manifest, back to back

Loading never executes anything from the file: it parses JSON and decodes integer arrays, and
checks magic, version, lengths, CRC-32 of the manifest and of every blob, blob bounds and
overlaps, every node attribute's type and range, weight code ranges, shape consistency of the
whole graph and the overflow bounds (:func:`~spquant.deploy.fold.analyze`). Any problem raises
:class:`ModelFileError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib

import numpy as np

from spquant.deploy.fold import fold_model
from spquant.deploy.packing import (
    PackingError,
    max_code_for,
    pack_codes,
    packed_nbytes,
    unpack_codes,
    weight_levels,
)
from spquant.deploy.program import OPS, DeployError, Program, analyze
from spquant.errors import ModelFileError
from spquant.fileio import atomic_write

__all__ = ["ModelFileError", "save", "load", "export", "MAGIC", "VERSION", "file_report"]

MAGIC = b"SPQM"
VERSION = (1, 1)  # 1.1: a channel_gate's A may carry one extra column (removed silent channels)
HEADER = struct.Struct("<4sHHIIQ")
MAX_MANIFEST = 64 << 20
MAX_ELEMENTS = 1 << 31
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
_INT_ENC = {
    "int8": np.dtype("i1"),
    "int16le": np.dtype("<i2"),
    "int32le": np.dtype("<i4"),
    "int64le": np.dtype("<i8"),
}


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _encode(program: Program) -> bytes:
    analyze(program)
    blobs: list[bytes] = []
    index: dict[str, dict] = {}
    offset = 0
    weight_bits = {n["weight"]: int(n["bits"]) for n in program.weight_nodes()}
    for name, arr in program.arrays.items():
        if name in weight_bits:
            data = pack_codes(arr, weight_bits[name])
            entry = {"encoding": "packed", "bits": weight_bits[name]}
        else:
            a = np.asarray(arr, dtype=np.int64)
            # the narrowest little-endian width that holds every value
            enc = next(
                e
                for e, dt in _INT_ENC.items()
                if a.size == 0 or (a.min() >= np.iinfo(dt).min and a.max() <= np.iinfo(dt).max)
            )
            data = a.astype(_INT_ENC[enc]).tobytes()
            entry = {"encoding": enc}
        entry.update(
            {"shape": list(arr.shape), "offset": offset, "nbytes": len(data), "crc32": zlib.crc32(data)}
        )
        index[name] = entry
        blobs.append(data)
        offset += len(data)
    weight_bytes = sum(index[n]["nbytes"] for n in weight_bits)
    manifest = {
        "format": "spquant-deploy",
        "version": list(VERSION),
        "frac_bits": program.frac_bits,
        "input": program.input,
        "nodes": program.nodes,
        "output": program.output,
        "blobs": index,
        "accounting": {"weight_params": program.weight_params(), "weight_bytes": weight_bytes},
        "meta": program.meta,
    }
    mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    body = b"".join(blobs)
    return (
        HEADER.pack(MAGIC, VERSION[0], VERSION[1], len(mbytes), zlib.crc32(mbytes), len(body)) + mbytes + body
    )


def save(program: Program, path) -> int:
    """Write ``program`` to ``path`` atomically (temp file in the same folder, fsync, rename; the
    file gets the permissions the umask gives).
    Returns the file size in bytes."""
    data = _encode(program)
    atomic_write(path, data)
    return len(data)


def export(model, path, input_shape, **fold_kwargs) -> Program:
    """Fold a live trained model (eval mode) and write it to ``path``; returns the program."""
    program = fold_model(model, input_shape, **fold_kwargs)
    save(program, path)
    return program


# ------------------------------------------------------------------------------------------------
# reading and validation
# ------------------------------------------------------------------------------------------------
def _int(v, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{what} = {v} outside [{lo}, {hi}]")
    return v


def _str(v, what: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"{what} must be a name matching {_NAME.pattern}, got {v!r}")
    return v


def _validate_manifest(man: dict, blob_len: int) -> None:
    if not isinstance(man, dict):
        raise ValueError("manifest is not a JSON object")
    if man.get("format") != "spquant-deploy":
        raise ValueError(f"manifest format is {man.get('format')!r}, expected 'spquant-deploy'")
    _int(man.get("frac_bits"), "frac_bits", 2, 30)
    inp = man.get("input")
    if not isinstance(inp, dict):
        raise ValueError("manifest 'input' missing")
    _str(inp.get("name"), "input.name")
    shape = inp.get("shape")
    if not isinstance(shape, list) or len(shape) not in (1, 3):
        raise ValueError(f"input.shape must be [C, H, W] or [N], got {shape!r}")
    for i, s in enumerate(shape):
        _int(s, f"input.shape[{i}]", 1, 1 << 16)
    _int(inp.get("bits"), "input.bits", 1, 16)
    _int(inp.get("max"), "input.max", 1, 2**16 - 1)
    if (
        not isinstance(inp.get("scale"), (int, float))
        or isinstance(inp.get("scale"), bool)
        or not 0 < inp["scale"] < float("inf")
    ):
        raise ValueError("input.scale must be a positive finite number")
    blobs = man.get("blobs")
    if not isinstance(blobs, dict):
        raise ValueError("manifest 'blobs' missing")
    spans = []
    for name, b in blobs.items():
        _str(name, "blob name")
        if not isinstance(b, dict):
            raise ValueError(f"blob {name!r} entry is not an object")
        enc = b.get("encoding")
        shp = b.get("shape")
        if not isinstance(shp, list) or len(shp) > 4:
            raise ValueError(f"blob {name!r}: bad shape {shp!r}")
        count = 1
        for i, s in enumerate(shp):
            count *= _int(s, f"blob {name!r} shape[{i}]", 0, MAX_ELEMENTS)
        if count > MAX_ELEMENTS:
            raise ValueError(f"blob {name!r}: {count} elements is too many")
        if enc == "packed":
            need = packed_nbytes(count, _int(b.get("bits"), f"blob {name!r} bits", 1, 16))
        elif enc in _INT_ENC:
            need = count * _INT_ENC[enc].itemsize
        else:
            raise ValueError(f"blob {name!r}: unknown encoding {enc!r}")
        off = _int(b.get("offset"), f"blob {name!r} offset", 0, blob_len)
        nb = _int(b.get("nbytes"), f"blob {name!r} nbytes", 0, blob_len)
        if nb != need:
            raise ValueError(f"blob {name!r}: nbytes {nb} but shape {shp} with encoding {enc} needs {need}")
        if off + nb > blob_len:
            raise ValueError(
                f"blob {name!r} [{off}, {off + nb}) runs past the blob section ({blob_len} bytes)"
            )
        _int(b.get("crc32"), f"blob {name!r} crc32", 0, 2**32 - 1)
        spans.append((off, off + nb, name))
    spans.sort()
    for (_, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ValueError(f"blobs {an!r} and {bn!r} overlap")
    nodes = man.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ValueError("manifest 'nodes' missing or empty")
    used = set()
    seen = {inp["name"]}
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise ValueError(f"node {i} is not an object")
        name = _str(n.get("name"), f"node {i} name")
        op = n.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"node {name!r}: unknown op {op!r}")
        ins = n.get("inputs")
        if not isinstance(ins, list) or len(ins) not in OPS[op].arity:
            raise ValueError(
                f"node {name!r}: needs {' or '.join(map(str, OPS[op].arity))} input(s), got {ins!r}"
            )
        for x in ins:
            if _str(x, f"node {name!r} input") not in seen:
                raise ValueError(f"node {name!r}: input {x!r} is not defined before it")
        out = _str(n.get("output"), f"node {name!r} output")
        if out in seen:
            raise ValueError(f"node {name!r}: output {out!r} defined twice")
        seen.add(out)
        for key, (lo, hi) in OPS[op].ints.items():
            _int(n.get(key), f"node {name!r} {key}", lo, hi)
        for key in OPS[op].arrays:
            ref = n.get(key)
            if not isinstance(ref, str) or ref not in blobs:
                raise ValueError(f"node {name!r}: {key} blob {ref!r} missing")
            if ref in used:
                raise ValueError(f"node {name!r}: blob {ref!r} used twice")
            used.add(ref)
            enc = blobs[ref]["encoding"]
            if key == "weight":
                if enc != "packed" or blobs[ref]["bits"] != n["bits"]:
                    raise ValueError(f"node {name!r}: weight blob must be packed {n['bits']}-bit codes")
                if n["max_code"] != max_code_for(n["bits"]):
                    raise ValueError(
                        f"node {name!r}: max_code {n['max_code']} inconsistent with {n['bits']} bits"
                    )
            elif enc == "packed":
                raise ValueError(f"node {name!r}: {key} blob must be integers, not packed codes")
        if op in ("lif", "lif_pruned") and not n["lb"] < n["ub"]:
            raise ValueError(
                f"node {name!r}: membrane grid lb={n['lb']} ub={n['ub']} needs lb < 0 <= ub or lb <= 0 < ub"
            )
    unused = set(blobs) - used
    if unused:
        raise ValueError(f"unreferenced blob(s) {sorted(unused)}")
    if man.get("output") != nodes[-1].get("output"):
        raise ValueError("manifest 'output' is not the last node's output")
    if not isinstance(man.get("meta", {}), dict):
        raise ValueError("manifest 'meta' must be an object")
    if not isinstance(man.get("accounting", {}), dict):
        raise ValueError("manifest 'accounting' must be an object")


def _decode(data: bytes, path) -> Program:
    if len(data) < HEADER.size:
        raise ModelFileError(path, f"truncated: {len(data)} bytes, the header alone is {HEADER.size}")
    magic, major, minor, mlen, mcrc, blen = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ModelFileError(path, f"not a .spq model file (magic {magic!r}, expected {MAGIC!r})")
    if major != VERSION[0]:
        raise ModelFileError(
            path, f"format version {major}.{minor} is not supported (this reader: {VERSION[0]}.x)"
        )
    if mlen > MAX_MANIFEST:
        raise ModelFileError(path, f"manifest length {mlen} exceeds the {MAX_MANIFEST}-byte limit")
    expected = HEADER.size + mlen + blen
    if len(data) < expected:
        raise ModelFileError(path, f"truncated: header says {expected} bytes, file has {len(data)}")
    if len(data) > expected:
        raise ModelFileError(path, f"{len(data) - expected} unexpected trailing bytes after the blob section")
    mbytes = data[HEADER.size : HEADER.size + mlen]
    if zlib.crc32(mbytes) != mcrc:
        raise ModelFileError(path, "manifest checksum mismatch (corrupt file)")
    try:
        man = json.loads(mbytes.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise ModelFileError(path, f"manifest is not valid JSON ({str(e)[:200]})") from None
    try:
        _validate_manifest(man, blen)
    except (ValueError, TypeError) as e:  # TypeError: a JSON list or object where a name belongs
        raise ModelFileError(path, f"invalid manifest: {str(e)[:300]}") from None
    body = memoryview(data)[HEADER.size + mlen :]
    arrays = {}
    for name, b in man["blobs"].items():
        raw = bytes(body[b["offset"] : b["offset"] + b["nbytes"]])
        if zlib.crc32(raw) != b["crc32"]:
            raise ModelFileError(path, f"blob {name!r} checksum mismatch (corrupt file)")
        shape = tuple(b["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        try:
            if b["encoding"] == "packed":
                codes = unpack_codes(raw, count, b["bits"]).reshape(shape)
                arrays[name] = codes.astype(np.int8 if b["bits"] <= 8 else np.int16)
            else:
                arrays[name] = (
                    np.frombuffer(raw, dtype=_INT_ENC[b["encoding"]]).astype(np.int64).reshape(shape)
                )
        except PackingError as e:
            raise ModelFileError(path, f"blob {name!r}: {e}") from None
    program = Program(
        input=man["input"],
        frac_bits=man["frac_bits"],
        nodes=man["nodes"],
        arrays=arrays,
        meta=man.get("meta", {}),
    )
    for n in program.nodes:
        if n["op"] in ("conv", "linear"):
            w = arrays[n["weight"]]
            want = 4 if n["op"] == "conv" else 2
            if w.ndim != want:
                raise ModelFileError(path, f"node {n['name']!r}: weight has {w.ndim} dims, expected {want}")
            if n["op"] == "conv" and w.shape[2:] != (n["kernel"], n["kernel"]):
                raise ModelFileError(
                    path, f"node {n['name']!r}: weight {w.shape} does not match kernel {n['kernel']}"
                )
            if np.abs(arrays[n["M"]]).max(initial=0) >= 2**32:
                raise ModelFileError(path, f"node {n['name']!r}: multiplier exceeds 32 bits")
    acc = man.get("accounting", {})
    if acc.get("weight_params") != program.weight_params():
        raise ModelFileError(path, "accounting.weight_params does not match the weight blobs")
    try:
        analyze(program)
    except (DeployError, KeyError, IndexError, ValueError, TypeError) as e:
        raise ModelFileError(path, f"inconsistent program: {e}") from None
    return program


def load(path) -> Program:
    """Read and validate a .spq file (no code execution); raises :class:`ModelFileError`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelFileError(path, f"cannot read ({e.strerror})") from None
    return _decode(data, path)


def loads(data: bytes, name: str = "<bytes>") -> Program:
    return _decode(data, name)


def file_report(path) -> dict:
    """File size, weight-blob bytes and the memory accounting (params x packed bits) of a .spq."""
    from spquant.quant import packed_bits_per_value

    program = load(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        _, _, _, mlen, _, blen = HEADER.unpack(f.read(HEADER.size))
    acct_bits = sum(
        program.arrays[n["weight"]].size * packed_bits_per_value(weight_levels(n["bits"]))
        for n in program.weight_nodes()
    )
    paper_bits = sum(program.arrays[n["weight"]].size * n["bits"] for n in program.weight_nodes())
    weight_bytes = sum(
        packed_nbytes(program.arrays[n["weight"]].size, n["bits"]) for n in program.weight_nodes()
    )
    return {
        "file_bytes": size,
        "manifest_bytes": mlen,
        "blob_bytes": blen,
        "weight_params": program.weight_params(),
        "weight_blob_bytes": weight_bytes,
        "accounting_packed_bytes": acct_bits / 8,
        "accounting_paper_bytes": paper_bits / 8,
        "fixed_point_param_bytes": blen - weight_bytes,
    }
