"""Packing of signed symmetric integer codes into bytes.

A ``b``-bit weight has ``L = 2^b - 1`` levels ``{-n..n}``, ``n = 2^(b-1) - 1`` (ternary: b = 2,
L = 3). Codes are stored offset to ``d = code + n`` in ``0..L-1``, then packed the denser of:

* ``base``: ``p`` digits per byte, ``byte = sum_i d_i * L^i`` (first value least significant), where
  ``p = floor(log_L 256)``: ternary -> 5 trits per byte (3^5 = 243 <= 256), 1.6 bits per value;
* ``bits``: plain ``ceil(log2 L)``-bit fields, little-endian within the byte stream (first value in
  the lowest bits): 4-bit -> nibbles (first value in the low nibble), 8-bit -> one byte each.

Binary weights (``b = 1``) have the two codes ``{-1, +1}`` (no zero): stored as one bit each,
``1`` for +1 and ``0`` for -1, 8 per byte, first value in the lowest bit; padding bits are 0.

This is exactly the accounting of :func:`spquant.quant.packed_bits_per_value`; a packed blob of
``count`` values has ``ceil(count * packed_bits / 8)`` bytes. Padding digits are 0 codes
(``d = n``) for ``base`` and zero bits for ``bits``; unpacking validates the padding and every digit.
"""

from __future__ import annotations

import math

import numpy as np

from spquant.errors import PackingError
from spquant.quant import packed_bits_per_value

__all__ = [
    "packing_for",
    "pack_codes",
    "unpack_codes",
    "packed_nbytes",
    "weight_levels",
    "max_code_for",
    "PackingError",
]


def weight_levels(bits: int) -> int:
    """Number of weight codes of a b-bit quantizer: 2 for binary {-1, +1}, else 2^b - 1 ({-n..n})."""
    return 2 if bits == 1 else 2**bits - 1


def max_code_for(bits: int) -> int:
    """Largest weight code of a b-bit quantizer: 1 for binary, else 2^(b-1) - 1."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def packing_for(bits: int) -> tuple[str, int, int]:
    """(scheme 'sign', 'base' or 'bits', values per byte or bits per value, levels L) for b-bit codes."""
    if not 1 <= bits <= 16:
        raise PackingError(f"weight bits must be 1..16, got {bits}")
    if bits == 1:
        return "sign", 1, 2
    levels = 2**bits - 1
    plain = math.ceil(math.log2(levels))
    per_byte = 0
    while levels ** (per_byte + 1) <= 256:
        per_byte += 1
    if per_byte and 8.0 / per_byte < plain:
        return "base", per_byte, levels
    return "bits", plain, levels


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of ``count`` packed b-bit codes (= ceil(count * packed_bits_per_value / 8))."""
    scheme, k, levels = packing_for(bits)
    n = -(-count // k) if scheme == "base" else -(-count * k // 8)
    if scheme == "sign":
        return n
    assert n == math.ceil(count * packed_bits_per_value(levels) / 8 - 1e-9)
    return n


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    scheme, k, levels = packing_for(bits)
    n = (levels - 1) // 2
    c = np.asarray(codes).reshape(-1).astype(np.int64)
    if scheme == "sign":
        if c.size and not np.all((c == 1) | (c == -1)):
            raise PackingError("binary weight codes must be -1 or +1")
        return np.packbits((c > 0).astype(np.uint8), bitorder="little").tobytes()
    if c.size and (c.min() < -n or c.max() > n):
        raise PackingError(f"codes outside [-{n}, {n}] for {bits}-bit weights")
    d = c + n
    if scheme == "base":
        pad = (-d.size) % k
        d = np.concatenate([d, np.full(pad, n, dtype=np.int64)]).reshape(-1, k)
        weights = levels ** np.arange(k, dtype=np.int64)
        return (d * weights).sum(1).astype(np.uint8).tobytes()
    # plain bit fields, LSB first
    bitarr = ((d[:, None] >> np.arange(k)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bitarr, bitorder="little").tobytes()


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`; validates length, digits and padding. Returns int64 codes."""
    scheme, k, levels = packing_for(bits)
    n = (levels - 1) // 2
    need = packed_nbytes(count, bits)
    if len(data) != need:
        raise PackingError(f"{count} {bits}-bit codes need {need} bytes, got {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if scheme == "sign":
        bitarr = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little").astype(np.int64)
        if np.any(bitarr[count:]):
            raise PackingError("nonzero padding bits")
        return 2 * bitarr[:count] - 1
    if scheme == "base":
        if raw.size and raw.max() >= levels**k:
            raise PackingError(
                f"byte value {int(raw.max())} is not a valid base-{levels} group (max {levels**k - 1})"
            )
        d = (raw[:, None] // (levels ** np.arange(k, dtype=np.int64))) % levels
        d = d.reshape(-1)
        if np.any(d[count:] != n):
            raise PackingError("nonzero padding codes")
        d = d[:count]
    else:
        bitarr = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little").astype(np.int64)
        if np.any(bitarr[count * k :]):
            raise PackingError("nonzero padding bits")
        d = (bitarr[: count * k].reshape(count, k) << np.arange(k)).sum(1)
        if d.size and d.max() >= levels:
            raise PackingError(f"field value {int(d.max())} outside 0..{levels - 1}")
    return d - n
