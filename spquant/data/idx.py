"""IDX files (MNIST, Fashion-MNIST, KMNIST), gzip-compressed or raw.

Layout: bytes 0-1 zero, byte 2 the element type (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64; big-endian), byte 3 the number of dimensions, then one
big-endian uint32 per dimension, then the data (row-major).

>>> import tempfile, os, numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte.gz")
>>> write_idx(p, np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
>>> read_idx(p).shape
(3, 2, 2)
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from spquant.data.events import EventFileError
from spquant.data.readers._io import read_bytes

IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


MAX_IDX_BYTES = 1 << 34  # 16 GiB of data: far above any IDX data set
GZIP_MAX_RATIO = 1100  # deflate cannot expand more than 1032:1; a header promising more is corrupt


def _header(head: bytes, path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) from the first bytes of an IDX file, checked."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise EventFileError(path, f"not an IDX file: the first two bytes must be zero, got {head[:4]!r}")
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        raise EventFileError(path, f"not an IDX file: unknown element type 0x{code:02X}")
    if ndim == 0 or len(head) < 4 + 4 * ndim:
        raise EventFileError(path, f"IDX header truncated or has {ndim} dimensions")
    shape = tuple(int(v) for v in np.frombuffer(head, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = dtype.itemsize
    for s in shape:
        expected *= s
    if expected > MAX_IDX_BYTES:
        raise EventFileError(
            path, f"IDX header declares shape {shape} ({expected} bytes), over the {MAX_IDX_BYTES}-byte limit"
        )
    return shape, dtype, 4 + 4 * ndim


def _check_body(path, shape, expected: int, body: int) -> None:
    if body != expected:
        raise EventFileError(
            path,
            f"IDX header says shape {shape} ({expected} bytes of data) but the file holds {body} bytes"
            + (" (truncated)" if body < expected else " (trailing bytes)"),
        )


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array of its stored shape (native byte order).

    The header is read and checked first (for gzip: inflated alone); then at most the declared
    number of bytes is read or inflated, so a corrupt header cannot make the reader allocate more
    than the data it promises (and a gzip cannot promise more than deflate can expand to).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        read_bytes(path)  # raises the reader's error for a missing path or a folder
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        with open(path, "rb") as f:
            head = f.read(4 + 4 * 255)
        shape, dtype, hlen = _header(head, path)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else 0
        _check_body(path, shape, expected, size - hlen)
        with open(path, "rb") as f:
            data = f.read()
        return parse_idx(data, path)
    try:
        with gzip.open(path, "rb") as g:
            head = g.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0:
                head += g.read(4 * head[3])
            shape, dtype, hlen = _header(head, path)
            expected = dtype.itemsize
            for s in shape:
                expected *= s
            if expected > GZIP_MAX_RATIO * size:
                raise EventFileError(
                    path,
                    f"IDX header declares {expected} bytes of data, more than a {size}-byte "
                    "gzip file can hold (corrupt header)",
                )
            body = g.read(expected + 1)
            if len(body) > expected:
                raise EventFileError(
                    path,
                    f"IDX header says shape {shape} ({expected} bytes of data) but the "
                    "file holds more (trailing bytes)",
                )
            g.read(1)  # reach the end of the member so the CRC-32 and length are checked
    except (OSError, EOFError, zlib.error) as e:
        raise EventFileError(path, f"corrupt or truncated gzip data ({e})") from None
    _check_body(path, shape, expected, len(body))
    return parse_idx(head[:hlen] + body, path)


def parse_idx(data: bytes, path=None) -> np.ndarray:
    """Parse the bytes of an IDX file (see :func:`read_idx`)."""
    shape, dtype, hlen = _header(data, path)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    _check_body(path, shape, expected, len(data) - hlen)
    arr = np.frombuffer(data, dtype, offset=hlen).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as an IDX file (gzip when ``compress`` or the name ends in ``.gz``)."""
    array = np.asarray(array)
    for code, dt in IDX_TYPES.items():  # noqa: B007 (code is the loop's result)
        if dt.kind == array.dtype.kind and dt.itemsize == array.dtype.itemsize:
            break
    else:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = head + array.astype(IDX_TYPES[code]).tobytes()
    path = os.fspath(path)
    if compress or (compress is None and path.endswith(".gz")):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with open(path, "wb") as f:
        f.write(data)


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(root, name: str) -> str:
    """``root/name`` or ``root/name.gz``, whichever exists; EventFileError naming both otherwise."""
    root = os.fspath(root)
    for cand in (os.path.join(root, name), os.path.join(root, name + ".gz")):
        if os.path.isfile(cand):
            return cand
    raise EventFileError(
        os.path.join(root, name),
        f"missing: put {name}.gz (or the uncompressed {name}) into {root} "
        "(e.g. with 'spquant data fetch mnist --root DIR')",
    )


def load_idx_split(root, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, H, W]`` and labels ``int64 [N]`` of an MNIST-layout folder (MNIST,
    Fashion-MNIST, KMNIST use the same four file names)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_name, lab_name = MNIST_FILES[split]
    img_path, lab_path = find_idx_file(root, img_name), find_idx_file(root, lab_name)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise EventFileError(img_path, f"expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise EventFileError(lab_path, f"expected {images.shape[0]} labels, got shape {labels.shape}")
    return images, labels.astype(np.int64)
