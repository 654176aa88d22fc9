"""The three accountings (dense MAC, effective op, authors' convention) against brute-force counting."""

from __future__ import annotations

import pytest
import torch

from spquant.cost import measure_cost
from spquant.cost.paper import paper_convention_reduction, paper_convention_terms
from spquant.layers import ConvBNLIF
from spquant.models import VGG9, QuantSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_convention_hand_example():
    # one gated layer: B=2, T=2, output [2, 2, 4, 3, 3], C_in*k^2 = 2*9, predictor input 2x5x5
    # conv_dense = B*T*(C_out*H)*kvol = 2*2*12*18 = 864; conv_kept = 2*(1.0+0.5)*12*18 = 648
    # mem_dense = T * B*(B*T*C_out)*H*W = 2 * 2*16*9 = 576
    # mem_kept = B*12*9*(1-0.5) + B*12*9*(1-0.25) = 108 + 162 = 270; predictor = 2*2*4*5*5 = 400
    t = paper_convention_terms(2, 2, 4, 3, 3, 18, [1.0, 0.5], 12, [0.5, 0.25], (2, 5, 5))
    assert t.as_dict() == {
        "conv_dense": 864.0,
        "conv_kept": 648.0,
        "mem_dense": 576.0,
        "mem_kept": 270.0,
        "predictor": 400.0,
    }
    assert paper_convention_reduction([t]) == pytest.approx((864 + 576) / (648 + 270 + 400))
    # a second batch adds term by term
    assert paper_convention_reduction([t, t]) == pytest.approx((864 + 576) / (648 + 270 + 400))
    with pytest.raises(ValueError):
        paper_convention_terms(2, 3, 4, 3, 3, 18, [1.0, 0.5], 12, [0.5, 0.25])


def _tiny_net(seed=0, channel_threshold=-0.3):
    torch.manual_seed(seed)
    spec = QuantSpec(mode="spquant", prune={"channel_prior_threshold": channel_threshold})
    net = VGG9(3, in_channels=2, input_size=(6, 6), width=1.0, plan=[4, 5], spec=spec).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConvBNLIF):
                m.gate.predictor.weight.normal_(0, 2.0)  # random gates: some channels off
                m.gate.predictor.bias.normal_(0, 1.0)
                m.bn.weight.uniform_(0.5, 3.0)
                m.bn.bias.uniform_(-1.0, 1.0)
    return net


def _brute_force(net, x, channel_threshold=-0.3):
    """Count by loops over every output element, from the layer inputs, gates and stored membranes."""
    captured = {}

    def grab(name):
        def hook(mod, inputs, output):
            captured[name] = (
                inputs[0].detach(),
                mod.gate.last_gate.clone(),
                mod.neuron.last_membrane.clone(),
            )

        return hook

    blocks = [(n, m) for n, m in net.named_modules() if isinstance(m, ConvBNLIF)]
    hs = [m.register_forward_hook(grab(n)) for n, m in blocks]
    lin_in = {}
    hs.append(net.classifier.register_forward_hook(lambda m, i, o: lin_in.setdefault("x", i[0].detach())))
    for _, m in blocks:
        m.neuron.record = True
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    T, B = x.shape[:2]
    c = dict(dense=0, kept=0, sops=0, over=0, updates=0, skipped=0, gdense=0, gkept=0, prior_off=0)
    per_layer = {}
    paper = []
    for name, m in blocks:
        xi, gate, mem = captured[name]
        _, _, cin, H, W = xi.shape
        cout = m.conv.out_channels
        lkept = ldense = 0
        zeros, act_frac, act_entries = [], [], 0
        for t in range(T):
            zeros.append(float((mem[t] == 0).float().mean()))
            chan_on = 0
            for b in range(B):
                for o in range(cout):
                    g = bool(gate[t, b, o] > 0.5)
                    if t > 0:  # channel prior from the stored state m_{t-1}
                        prior_on = float(mem[t - 1, b, o].mean()) >= channel_threshold
                        c["prior_off"] += int(g and not prior_on)
                        g = g and prior_on
                    chan_on += int(g)
                    act_entries += int(g)
                    for i in range(H):
                        for j in range(W):
                            keep = g and (t == 0 or float(mem[t - 1, b, o, i, j]) > -1)
                            ldense += cin * 9
                            c["updates"] += int(keep)
                            c["skipped"] += int(not keep)
                            if not keep:
                                continue
                            lkept += cin * 9
                            for ci in range(cin):
                                for di in (-1, 0, 1):
                                    for dj in (-1, 0, 1):
                                        ii, jj = i + di, j + dj
                                        if 0 <= ii < H and 0 <= jj < W and xi[t, b, ci, ii, jj] != 0:
                                            c["sops"] += 1
            act_frac.append(chan_on / (B * cout))
            c["over"] += B * (cin * H * W + 3 * cin + cin * cout + 2 * cout) + (
                B * cout * H * W if t > 0 else 0
            )
        c["dense"] += ldense
        c["kept"] += lkept
        c["gdense"] += ldense
        c["gkept"] += lkept
        per_layer[name] = lkept / ldense
        paper.append(
            paper_convention_terms(B, T, cout, H, W, cin * 9, act_frac, act_entries, zeros, (cin, H, W))
        )
    xl = lin_in["x"].reshape(T, B, -1)
    lin = net.classifier
    c["dense"] += T * B * lin.in_features * lin.out_features
    lin_sops = int((xl != 0).sum()) * lin.out_features
    n = B
    dense = c["dense"] / n
    return {
        "dense_mac_reduction": dense
        / ((c["kept"] + T * B * lin.in_features * lin.out_features + c["over"]) / n),
        "effective_op_reduction": dense / ((c["sops"] + lin_sops + c["updates"] + c["over"]) / n),
        "paper_convention_reduction": paper_convention_reduction(paper),
        "kept_fraction": c["gkept"] / c["gdense"],
        "kept_fraction_by_layer": per_layer,
        "prior_off": c["prior_off"],
    }


# at -0.3 the channel prior never closes a channel the gate opened; at 0.2 it closes some
@pytest.mark.parametrize("channel_threshold", [-0.3, 0.2])
def test_three_accountings_agree_with_brute_force_counting(channel_threshold):
    net = _tiny_net(channel_threshold=channel_threshold)
    x = (torch.rand(3, 4, 2, 6, 6) < 0.4).float()
    expected = _brute_force(net, x, channel_threshold)
    got = measure_cost(net, [x])
    assert 0.05 < got.kept_fraction < 0.95  # the random gates and the priors really prune
    assert (expected["prior_off"] > 0) == (channel_threshold > 0)
    for key in (
        "dense_mac_reduction",
        "effective_op_reduction",
        "paper_convention_reduction",
        "kept_fraction",
    ):
        assert getattr(got, key) == pytest.approx(expected[key], rel=1e-6), key  # float32 zero fractions
    assert got.kept_fraction_by_layer == pytest.approx(expected["kept_fraction_by_layer"], rel=1e-9)
    assert got.paper_convention["batch_sizes"] == [4]
    assert got.paper_convention["label"] == "authors' convention"


def _one_block(gate_options, membrane, prior, seed):
    from torch import nn

    from spquant.neuron import LIF
    from spquant.prune import build_gate
    from spquant.quant import TernaryWeight

    torch.manual_seed(seed)
    block = ConvBNLIF(
        2,
        4,
        3,
        weight_quant=TernaryWeight(),
        neuron=LIF(membrane=membrane, threshold=0.5),
        gate=build_gate(2, 4, gate_options) if gate_options else None,
    )
    block.neuron.prior = prior
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 3.0)
        block.bn.bias.uniform_(-1.0, 1.0)
    captured = {}

    def grab(mod, inputs, output):
        gate = getattr(mod.gate, "last_gate", None)
        mem = mod.neuron.last_membrane
        captured["gate"] = None if gate is None else gate.clone() > 0.5
        captured["mem"] = None if mem is None else mem.clone()

    block.register_forward_hook(grab)
    return nn.Sequential(block).eval(), captured


# one gated layer, T = 3, B = 2, C_in = 2 -> C_out = 4, 3x3 kernel (kvol 18), input and output 5x7:
# conv_dense = B*T*(C_out*H)*kvol = 2*3*20*18 = 2160, mem_dense = T*B*(B*T*C_out)*H*W = 6*24*35 = 5040
def test_paper_terms_of_a_learned_gate_with_fp32_membrane():
    net, cap = _one_block({"init_std": 3.0, "init_bias": 0.0}, None, None, seed=4)
    x = (torch.rand(3, 2, 2, 5, 7) < 0.5).float()
    cost = measure_cost(net, [x])
    got = cost.paper_convention
    g = cap["gate"]  # [T, B, C_out]: the only thing that switches channels off here
    assert cap["mem"] is None and 0 < g.float().mean() < 1
    frac = [float(g[t].float().mean()) for t in range(3)]
    expected = {
        "conv_dense": 2160.0,
        "conv_kept": 2 * sum(frac) * 20 * 18,
        "mem_dense": 5040.0,
        "mem_kept": 3 * 2 * int(g.sum()) * 35 * 1.0,  # FP32 membrane: no stored code counts as zero
        "predictor": 2.0 * 2 * 4 * 5 * 7,  # 2 * C_in * C_out * H * W of the predictor's input
    }
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-9)
    assert got["batch_sizes"] == [2]
    # gate overhead per step: B * (C_in*H*W + 3*C_in + C_in*C_out + 2*C_out) = 2 * (70 + 6 + 8 + 8)
    assert cost.layers[0]["overhead_macs"] == [184] * 3


def test_paper_terms_of_a_prior_only_layer():
    from spquant.prune import MembranePrior
    from spquant.quant import IntegerMembrane

    prior = MembranePrior(channel=True, channel_threshold=0.0, spatial=False)
    net, cap = _one_block(None, IntegerMembrane(), prior, seed=2)
    x = (torch.rand(3, 2, 2, 5, 7) < 0.5).float()
    cost = measure_cost(net, [x])
    got = cost.paper_convention
    mem = cap["mem"]  # stored ternary codes [T, B, C_out, H, W]
    assert cap["gate"] is None
    active = torch.ones(3, 2, 4, dtype=torch.bool)
    for t in (1, 2):  # the channel prior reads m_{t-1}: mean over space >= 0
        active[t] = mem[t - 1].float().mean(dim=(2, 3)) >= 0.0
    assert 0 < active.float().mean() < 1
    zeros = [float((mem[t] == 0).float().mean()) for t in range(3)]
    entries = int(active.sum())
    expected = {
        "conv_dense": 2160.0,
        "conv_kept": 2 * sum(float(active[t].float().mean()) for t in range(3)) * 20 * 18,
        "mem_dense": 5040.0,
        "mem_kept": sum(2 * entries * 35 * (1 - z) for z in zeros),
        "predictor": 0.0,  # no learned predictor
    }
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-6)  # float32 zero fractions
    assert cost.layers[0]["kind"] == "conv-gated"


def test_paper_terms_sum_and_edge_cases():
    from spquant.cost.paper import PaperTerms

    a, b = PaperTerms(1, 2, 3, 4, 5), PaperTerms(10, 20, 30, 40, 50)
    assert (a + b).as_dict() == {
        "conv_dense": 11,
        "conv_kept": 22,
        "mem_dense": 33,
        "mem_kept": 44,
        "predictor": 55,
    }
    assert PaperTerms().reduction() == float("inf")  # nothing kept, nothing counted
    t = paper_convention_terms(1, 2, 3, 2, 2, 4, [1.0, 1.0], 6, [0.0, 0.0], None)
    assert t.predictor == 0.0
    # predictor_calls multiplies the predictor term: 2 * 2 * 3 * 4 * 4 * 3 calls
    t3 = paper_convention_terms(1, 2, 3, 2, 2, 4, [1.0, 1.0], 6, [0.0, 0.0], (2, 4, 4), predictor_calls=3)
    assert t3.predictor == 2 * 2 * 3 * 4 * 4 * 3
    with pytest.raises(ValueError):  # one zero fraction too few, the active fractions right
        paper_convention_terms(1, 2, 3, 2, 2, 4, [1.0, 1.0], 6, [0.0])
