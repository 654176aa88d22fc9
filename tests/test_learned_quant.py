"""Learned-scale (LSQ) and binary weight quantizers: exact codes, gradients vs the formulas,
round trips through to_int(), the packed .spq format and the integer interpreter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spquant.deploy import DeploySim, Interpreter, fold_model
from spquant.deploy.packing import PackingError, pack_codes, packed_nbytes, packing_for, unpack_codes
from spquant.deploy.targets.spq import load, save
from spquant.quant import BinaryWeight, LSQWeight, SAWBWeight, TernaryWeight, weight_quantizer
from tests.deploy.helpers import repeat, synthetic_digits, tiny_model, train


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_lsq_every_code_round_trips(bits, per_channel):
    """Weights placed exactly on every representable level give back those codes and the step."""
    n = 2 ** (bits - 1) - 1
    C = 3
    q = LSQWeight(bits, per_channel=per_channel, channels=C)
    steps = torch.tensor([0.25, 0.5, 0.125]) if per_channel else torch.tensor(0.25)
    with torch.no_grad():
        q.step.copy_(steps)
        q.initialized.fill_(True)
    levels = torch.arange(-n, n + 1, dtype=torch.float32)
    w = levels.repeat(C, 1) * (steps.view(-1, 1) if per_channel else steps)
    codes, scale = q.to_int(w)
    assert torch.equal(codes.long(), levels.long().repeat(C, 1))
    s = scale.view(-1, 1) if per_channel else scale
    assert torch.equal(codes.float() * s, q(w))
    assert torch.equal(q(w), w)


def test_lsq_starts_from_the_fixed_quantizer():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3) * 0.1
    c_twn, s_twn = TernaryWeight().to_int(w)
    q = LSQWeight(2)
    assert math.isclose(float(q.to_int(w)[1]), s_twn, rel_tol=1e-6)
    c_sawb, s_sawb = SAWBWeight(4).to_int(w)
    c4, s4 = LSQWeight(4).to_int(w)
    assert math.isclose(s4, s_sawb, rel_tol=1e-6)
    assert (c4 != c_sawb).float().mean() < 0.01  # same grid, rounding ties aside


def test_lsq_gradients_match_the_formulas():
    torch.manual_seed(1)
    n = 7
    w = (torch.randn(4, 10) * 0.3).requires_grad_()
    q = LSQWeight(4, per_channel=True, channels=4)
    y = q(w)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    s = q.step.detach().view(-1, 1)
    v = w.detach() / s
    inside = (v >= -n) & (v <= n)
    codes = torch.floor(v + 0.5).clamp(-n, n)
    assert torch.equal(w.grad, g * inside)
    want = (g * torch.where(inside, codes - v, codes)).sum(1) / math.sqrt(10 * n)
    assert torch.allclose(q.step.grad, want, atol=1e-6)


def test_binary_codes_scale_and_gradients():
    torch.manual_seed(2)
    w = (torch.randn(3, 8)).requires_grad_()
    q = BinaryWeight(per_channel=True, channels=3)
    codes, scale = q.to_int(w)
    assert set(codes.unique().tolist()) <= {-1, 1}
    assert torch.allclose(scale, w.detach().abs().mean(1))
    y = q(w)
    assert torch.equal(y, codes.float() * scale.view(-1, 1))
    g = torch.randn_like(y)
    (y * g).sum().backward()
    assert torch.equal(w.grad, g)  # straight through
    assert torch.allclose(q.step.grad, (g * torch.sign(w.detach())).sum(1) / math.sqrt(8))
    # zero weights get the +1 code (no third level)
    assert BinaryWeight().to_int(torch.zeros(4))[0].tolist() == [1, 1, 1, 1]
    # the statistic variant recomputes mean|W| every call
    qs = weight_quantizer(1, "stat")
    assert not any(True for _ in qs.parameters())
    assert math.isclose(qs.to_int(torch.tensor([2.0, -4.0]))[1], 3.0)


def test_binary_packing_every_code():
    assert packing_for(1) == ("sign", 1, 2)
    r = np.random.default_rng(0)
    for count in list(range(0, 20)) + [1000]:
        codes = r.choice([-1, 1], count)
        data = pack_codes(codes, 1)
        assert len(data) == packed_nbytes(count, 1) == -(-count // 8)
        assert np.array_equal(unpack_codes(data, count, 1), codes)
    # every byte is a valid group of 8 codes and re-encodes to itself
    for byte in range(256):
        codes = unpack_codes(bytes([byte]), 8, 1)
        assert set(codes.tolist()) <= {-1, 1}
        assert pack_codes(codes, 1) == bytes([byte])
    assert pack_codes(np.array([1, -1, -1, 1]), 1) == bytes([0b1001])
    with pytest.raises(PackingError, match="-1 or \\+1"):
        pack_codes(np.array([1, 0]), 1)
    with pytest.raises(PackingError, match="padding"):
        unpack_codes(bytes([0b1000]), 3, 1)


VARIANTS = {
    "ternary_lsq_layer": dict(weight_scale="lsq-layer"),
    "ternary_lsq_channel_vth_channel": dict(weight_scale="lsq-channel", learn_threshold="channel"),
    "4bit_lsq_channel": dict(weight_bits=4, weight_scale="lsq-channel"),
    "binary_learned_channel": dict(weight_bits=1, first_bits=4, last_bits=2, weight_scale="lsq-channel"),
    "binary_everywhere_stat": dict(weight_bits=1, first_bits=1, last_bits=1),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_learned_scale_models_round_trip_and_run_bit_exact(variant, tmp_path):
    """Codes survive to_int -> .spq -> load; deploy-sim == interpreter (fast and reference) exactly."""
    T = 3
    torch.manual_seed(0)
    xtr, ytr = synthetic_digits(256, size=16, seed=1)
    xte, _ = synthetic_digits(48, size=16, seed=2)
    model = train(tiny_model("vgg", size=16, **VARIANTS[variant]), xtr, ytr, steps=6, batch=16, T=2, lr=1e-2)
    program = fold_model(model, tuple(xte.shape[1:]))
    save(program, tmp_path / "m.spq")
    loaded = load(tmp_path / "m.spq")
    convs = [m for m in model.modules() if hasattr(m, "weight_quant") and hasattr(m.weight_quant, "to_int")]
    nodes = program.weight_nodes()
    assert len(convs) == len(nodes)
    for layer, node in zip(convs, nodes):
        codes, _ = layer.weight_quant.to_int(layer.weight)
        assert node["bits"] == layer.weight_quant.bits
        assert np.array_equal(loaded.arrays[node["weight"]], codes.numpy())
    sim, interp = DeploySim(program), Interpreter(loaded)
    xs = repeat(xte, T)
    env = {
        k: v.numpy().astype(np.int64)
        for k, v in sim.run_codes(torch.from_numpy(program.encode_input(xs))).items()
    }
    fast = interp.run_all(xte, T=T, path="fast")
    ref = interp.run_all(program.encode_input(xs)[:, :6], path="reference")
    for name in env:
        assert np.array_equal(env[name], fast[name]), name
        assert np.array_equal(env[name][:, :6], ref[name]), name
    spikes = sum(int(env[n["output"]].sum()) for n in program.nodes if n["op"] == "lif")
    assert spikes > 0
    with torch.no_grad():
        fq = model(xs).mean(0).argmax(-1)
    assert (fq == sim(xs).mean(0).argmax(-1)).float().mean() >= 0.95
