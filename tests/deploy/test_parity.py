"""Bit-exact parity: deploy-sim == reference interpreter == fast interpreter, at every layer;
and fake-quant ~ deploy-sim. Small models trained here for a handful of steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy import DeploySim, Interpreter, fold_model
from spquant.deploy.targets.spq import load, save
from tests.deploy.helpers import real_mnist, repeat, synthetic_digits, tiny_model, train

T = 3
VARIANTS = {
    "vgg_ternary": dict(kind="vgg"),
    "vgg_4bit_w": dict(kind="vgg", weight_bits=4),
    "vgg_5level_mem_channel_vth": dict(kind="vgg", membrane_lb=-3, membrane_ub=1, learn_threshold="channel"),
    "resnet_ternary": dict(kind="resnet", learn_threshold="layer"),
}


def _check(model, xte, yte, n_ref, tmp_path):
    program = fold_model(model, tuple(xte.shape[1:]))
    # through the file, so the interpreter runs what was written
    save(program, tmp_path / "m.spq")
    loaded = load(tmp_path / "m.spq")
    sim = DeploySim(program)
    interp = Interpreter(loaded)
    xs = repeat(xte, T)
    codes = program.encode_input(xs)
    assert np.array_equal(codes[0], xte.astype(np.int64)), "uint8 pixels must encode to themselves"
    env_sim = {k: v.numpy().astype(np.int64) for k, v in sim.run_codes(torch.from_numpy(codes)).items()}
    fast = interp.run_all(xte, T=T, path="fast")  # static input: first layer runs once
    ref = interp.run_all(codes[:, :n_ref], path="reference")
    assert set(env_sim) == set(fast) == set(ref)
    for name in env_sim:
        assert np.array_equal(env_sim[name], fast[name]), f"fast path differs from deploy-sim at {name}"
        assert np.array_equal(env_sim[name][:, :n_ref], ref[name]), (
            f"reference differs from deploy-sim at {name}"
        )
    spikes = sum(int(env_sim[n["output"]].sum()) for n in program.nodes if n["op"] in ("lif", "lif_pruned"))
    assert spikes > 0, "a parity check on a silent network proves little"
    counts = interp.last_counts
    assert 0 < counts.sops < counts.dense_macs
    # fake quant vs deploy-sim
    with torch.no_grad():
        fq = model(xs)
    ds = sim(xs)
    agree = (fq.mean(0).argmax(-1) == ds.mean(0).argmax(-1)).float().mean().item()
    acc_fq = (fq.mean(0).argmax(-1).numpy() == yte).mean()
    acc_int = (interp.predict(xte, T=T) == yte).mean()
    assert agree >= 0.97, agree
    assert abs(acc_fq - acc_int) <= 0.03
    return acc_fq, acc_int


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_synthetic(variant, tmp_path):
    kw = dict(VARIANTS[variant])
    kind = kw.pop("kind")
    torch.manual_seed(0)
    xtr, ytr = synthetic_digits(256, size=16, seed=1)
    xte, yte = synthetic_digits(64, size=16, seed=2)
    model = train(tiny_model(kind, size=16, **kw), xtr, ytr, steps=6, batch=16, T=2, lr=1e-2)
    _check(model, xte, yte, n_ref=8, tmp_path=tmp_path)


def test_parity_real_mnist(tmp_path):
    variant = "vgg_ternary"
    data = real_mnist(2048, 128)
    if data is None:
        pytest.skip("real MNIST not found in ../shared/data/mnist")
    kw = dict(VARIANTS[variant])
    kind = kw.pop("kind")
    torch.manual_seed(0)
    xtr, ytr, xte, yte = data
    model = train(tiny_model(kind, **kw), xtr, ytr, steps=20, T=2, lr=1e-2)
    acc_fq, acc_int = _check(model, xte, yte, n_ref=8, tmp_path=tmp_path)
    assert acc_int > 0.4  # twenty steps on real digits: well above chance (about 0.75 measured)


@pytest.mark.parametrize(
    "prune",
    [
        {"mass": 0.7, "init_bias": 0.0, "init_std": 0.5},  # learned gate + channel and spatial prior
        {
            "learned_gate": True,
            "channel_prior": False,
            "spatial_prior": False,
            "init_bias": 0.0,
            "init_std": 0.5,
        },
        {
            "learned_gate": False,
            "channel_prior": True,
            "channel_prior_threshold": -0.5,
            "spatial_prior": True,
        },
    ],
)
def test_parity_pruned(prune, tmp_path):
    """spquant mode: the learned channel gate (integer rule) and the membrane prior."""
    torch.manual_seed(0)
    xtr, ytr = synthetic_digits(256, size=16, seed=1)
    xte, yte = synthetic_digits(64, size=16, seed=2)
    model = tiny_model("vgg", size=16, prune=prune)
    model = train(model, xtr, ytr, steps=4, batch=16, T=2, lr=1e-2)
    program = fold_model(model, (1, 16, 16))
    assert any(n["op"] == "lif_pruned" for n in program.nodes)
    _check(model, xte, yte, n_ref=8, tmp_path=tmp_path)
    interp = Interpreter(program)
    interp.run(program.encode_input(repeat(xte[:8], T)), path="reference")
    c = interp.last_counts
    assert c.kept_macs <= c.dense_macs
    gates = [k for k in program.arrays if k.endswith(".A")]
    if prune.get("learned_gate", True):  # the gate really switches channels off and on
        g = interp.run_all(program.encode_input(repeat(xte, T)), path="reference")
        vals = np.concatenate(
            [g[n["output"]].reshape(-1) for n in program.nodes if n["op"] == "channel_gate"]
        )
        assert gates and 0 < vals.mean() < 1


@pytest.mark.parametrize("predictor_bits", [2, 8, None])
def test_integer_gate_matches_the_trained_gate(predictor_bits):
    """The exported gate rule decides like the PyTorch gate (which runs on its quantized predictor
    weights): regression test for an export that used the unquantized predictor weights."""
    from spquant.deploy import DeploySim, fold_model
    from spquant.prune import gate_modules
    from tests.deploy.helpers import tiny_model

    torch.manual_seed(0)
    model = tiny_model(
        "vgg",
        size=16,
        prune={"predictor_bits": predictor_bits, "channel_prior": False, "spatial_prior": False},
    )
    for g in gate_modules(model):
        torch.nn.init.normal_(g.predictor.weight, std=1.0)  # gates that really switch
        torch.nn.init.zeros_(g.predictor.bias)
    model.eval()
    T, B = 2, 32
    codes = torch.randint(0, 256, (B, 1, 16, 16), dtype=torch.uint8)
    x = codes.float().div(255)[None].expand(T, B, 1, 16, 16)
    with torch.no_grad():
        model(x)
    torch_gates = torch.cat([g.last_gate.reshape(-1) for g in gate_modules(model)])
    assert 0.1 < torch_gates.float().mean() < 0.9  # the gates really switch channels
    program = fold_model(model, (1, 16, 16))
    env = DeploySim(program).run_codes(codes[None].expand(T, B, 1, 16, 16))
    gate_nodes = [n["output"] for n in program.nodes if n["op"] == "channel_gate"]
    int_gates = torch.cat([env[name].reshape(-1) for name in gate_nodes])
    assert int_gates.shape == torch_gates.shape
    assert (int_gates.to(torch.bool) == torch_gates.to(torch.bool)).float().mean() >= 0.99
