"""Exhaustive checks over every representable integer level: the LIF step and the packing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy.interpreter import lif_seq_fast, lif_step_int, requant
from spquant.deploy.packing import PackingError, pack_codes, packed_nbytes, packing_for, unpack_codes
from spquant.deploy.sim import lif_seq_sim
from spquant.quant import IntegerMembrane, packed_bits_per_value, round_half_up

GRIDS = [(-1, 1), (-3, 1), (-2, 2), (-8, 7)]


@pytest.mark.parametrize("lb,ub", GRIDS)
@pytest.mark.parametrize("F,tau_shift", [(4, 1), (8, 1), (16, 1), (6, 0), (6, 2)])
def test_lif_step_every_level(lb, ub, F, tau_shift):
    """Every stored level m x every fixed-point current in a window that covers every outcome:
    integer step == the float neuron of docs/method.md#neuron (exact in float64) == deploy-sim == fast path."""
    one = 2**F
    span = (max(abs(lb), abs(ub)) + 3) * one
    if F <= 8:
        currents = np.arange(-span, span + 1)
    else:  # 2^16 fractional steps: every rounding boundary +-2 and a random sample in between
        r = np.random.default_rng(0)
        edges = np.arange(lb - 3, ub + 4)[:, None] * one + np.array([-one // 2, 0, one // 2])[None, :]
        currents = np.unique(
            np.concatenate(
                [(edges.reshape(-1, 1) + np.arange(-2, 3)).reshape(-1), r.integers(-span, span, 20000)]
            )
        )
    for V_units in (1.0, 0.75, 0.25, 2.5, -0.5):
        V = int(V_units * one)
        m_grid, cur = np.meshgrid(np.arange(lb, ub + 1), currents, indexing="ij")
        s, m_new = lif_step_int(m_grid, cur, np.int64(V), F, tau_shift, lb, ub)
        # the float neuron of docs/method.md#neuron on the same values (exact in float64)
        u = (2.0**-tau_shift) * m_grid + cur / one
        s_f = u > V / one
        q = IntegerMembrane(lb, ub).quantize(torch.from_numpy((1 - s_f) * u)).numpy()
        assert np.array_equal(s, s_f.astype(np.int64))
        assert np.array_equal(m_new, q.astype(np.int64))
        assert set(np.unique(m_new)) <= set(range(lb, ub + 1))
        # deploy-sim and fast path: two steps, the first sets m (from m0), the second checks
        cur_t = torch.from_numpy(cur)[None]
        for dtype in (torch.float32, torch.int32, torch.int64):
            sf, mf = lif_seq_fast(
                cur_t.to(dtype),
                torch.tensor(V, dtype=dtype),
                F,
                tau_shift,
                lb,
                ub,
                m0=torch.from_numpy(m_grid),
            )
            assert np.array_equal(sf[0].numpy(), s) and np.array_equal(mf.numpy(), m_new)
        ss, ms = lif_seq_sim(
            cur_t.double(),
            torch.tensor(float(V), dtype=torch.float64),
            F,
            tau_shift,
            lb,
            ub,
            m0=torch.from_numpy(m_grid).double(),
        )
        assert np.array_equal(ss[0].numpy(), s) and np.array_equal(ms.numpy(), m_new)


def test_requant_rounds_half_up():
    acc = np.arange(-50, 51).reshape(1, -1, 1)[:, :, 0].reshape(-1, 1) * np.ones((1, 3), dtype=np.int64)
    M, B = np.array([3, -5, 7]), np.array([1, 0, -4])
    for S in range(0, 6):
        got = requant(acc, M, B, S)
        want = round_half_up(torch.from_numpy((acc * M + B) / 2.0**S)).numpy()
        assert np.array_equal(got, want.astype(np.int64))


@pytest.mark.parametrize("bits", list(range(2, 17)))
def test_packing_every_code_round_trips(bits):
    n = 2 ** (bits - 1) - 1
    every = np.arange(-n, n + 1)
    r = np.random.default_rng(bits)
    for count in list(range(0, 12)) + [len(every)]:
        codes = every if count == len(every) else r.integers(-n, n + 1, count)
        data = pack_codes(codes, bits)
        assert len(data) == packed_nbytes(count, bits)
        assert len(data) == int(np.ceil(count * packed_bits_per_value(2**bits - 1) / 8 - 1e-9))
        assert np.array_equal(unpack_codes(data, count, bits), codes)
    with pytest.raises(PackingError):
        pack_codes(np.array([n + 1]), bits)


def test_packing_layouts_and_corruption():
    assert packing_for(2) == ("base", 5, 3)  # 5 trits per byte
    assert packing_for(4) == ("bits", 4, 15)  # nibbles
    assert packing_for(8) == ("bits", 8, 255)
    # ternary: every one of the 243 valid bytes decodes and re-encodes to itself
    for byte in range(256):
        if byte < 243:
            codes = unpack_codes(bytes([byte]), 5, 2)
            assert pack_codes(codes, 2) == bytes([byte])
        else:
            with pytest.raises(PackingError, match="not a valid base-3"):
                unpack_codes(bytes([byte]), 5, 2)
    assert pack_codes(np.array([-1, 0, 1, 1, -1]), 2) == bytes([0 + 1 * 3 + 2 * 9 + 2 * 27 + 0 * 81])
    assert pack_codes(np.array([-7, 7]), 4) == bytes([0x0 | (14 << 4)])  # first value in the low nibble
    with pytest.raises(PackingError, match="field value 15"):
        unpack_codes(bytes([0xF0]), 2, 4)
    with pytest.raises(PackingError, match="padding"):
        unpack_codes(bytes([0]), 3, 2)  # padding trits must be the 0 code (digit 1)
    with pytest.raises(PackingError, match="padding"):
        unpack_codes(bytes([0xF7]), 1, 4)
    with pytest.raises(PackingError, match="need"):
        unpack_codes(b"\x00\x00", 3, 2)
