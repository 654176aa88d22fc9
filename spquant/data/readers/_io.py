"""Shared helpers for the readers: reading bytes, splitting text headers."""

from __future__ import annotations

import os

import numpy as np

from spquant.data.events import EventFileError


def read_bytes(path) -> bytes:
    """The whole file; EventFileError if it does not exist or is not a file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EventFileError(path, "no such file")
    with open(path, "rb") as f:
        return f.read()


def split_text_header(data: bytes, prefix: bytes, path) -> tuple[list[str], int]:
    """Split leading lines starting with ``prefix`` (e.g. b'#', b'%') from the binary body.

    Returns (header lines decoded as latin-1 without line endings, offset of the body).
    """
    pos = 0
    lines: list[str] = []
    n = len(data)
    while pos < n and data[pos : pos + len(prefix)] == prefix:
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFileError(path, "header line without line end (file truncated inside the header)")
        lines.append(data[pos:end].rstrip(b"\r").decode("latin-1"))
        pos = end + 1
    return lines, pos


def body_as(data: bytes, offset: int, dtype, path, what: str) -> np.ndarray:
    """View ``data[offset:]`` as records of ``dtype``; EventFileError if the size is not a multiple."""
    dtype = np.dtype(dtype)
    size = len(data) - offset
    if size % dtype.itemsize:
        raise EventFileError(
            path,
            f"truncated: {size} bytes of {what} after the header is not a multiple of the "
            f"{dtype.itemsize}-byte event size ({size % dtype.itemsize} bytes left over)",
        )
    return np.frombuffer(data, dtype=dtype, offset=offset)
