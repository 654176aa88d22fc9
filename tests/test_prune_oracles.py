"""Pruning statistics, the recorder and the gate's training-time paths against computations written
here: keep masks and per-step fractions from the gate / spatial gate / stored membranes by hand, the
spatial gate's logistic noise and loss reproduced from the same random draws, the target schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from spquant.layers import ConvBNLIF
from spquant.neuron import LIF
from spquant.prune import (
    GateRecorder,
    MembranePrior,
    build_gate,
    channel_importance,
    mass_target,
    record_prune_stats,
    set_training_progress,
)
from spquant.quant import IntegerMembrane

pytestmark = pytest.mark.usefixtures("one_thread")


def _block(seed=0, threshold=0.0):
    torch.manual_seed(seed)
    opts = {"init_std": 3.0, "init_bias": 0.0, "spatial_gate": True, "spatial_init_bias": 0.0}
    block = ConvBNLIF(
        2, 4, 3, neuron=LIF(membrane=IntegerMembrane(), threshold=0.5), gate=build_gate(2, 4, opts)
    )
    block.neuron.prior = MembranePrior(channel=True, channel_threshold=threshold, spatial=True)
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 3.0)
        block.bn.bias.uniform_(-1.0, 1.0)
    captured = {}

    def grab(mod, inputs, output):
        captured.update(
            x=inputs[0].clone(),
            gate=mod.gate.last_gate.clone() > 0.5,  # [T, B, C]
            spatial=mod.gate.last_spatial.clone() > 0.5,  # [T, B, 1, H, W]
            mem=mod.neuron.last_membrane,  # stored codes [T, B, C, H, W] when the LIF records
        )

    block.register_forward_hook(grab)
    return block.eval(), captured


def _by_hand(cap, threshold=0.0):
    """keep = gate AND spatial gate AND (t > 0: channel prior AND spatial prior from m_{t-1})."""
    g, sg, mem = cap["gate"], cap["spatial"], cap["mem"]
    T, B, C, H, W = mem.shape
    keep = torch.zeros(T, B, C, H, W, dtype=torch.bool)
    steps = []
    for t in range(T):
        s = dict(gate_on=0, prior_skip=0, active=0, spatial_skip=0, kept=0)
        for b in range(B):
            for c in range(C):
                ch_prior = t == 0 or float(mem[t - 1, b, c].float().mean()) >= threshold
                s["gate_on"] += int(g[t, b, c])
                s["prior_skip"] += int(not ch_prior)
                s["active"] += int(g[t, b, c] and ch_prior)
                for i in range(H):
                    for j in range(W):
                        sp = bool(sg[t, b, 0, i, j]) and (t == 0 or int(mem[t - 1, b, c, i, j]) > -1)
                        s["spatial_skip"] += int(not sp)
                        k = bool(g[t, b, c]) and ch_prior and sp
                        keep[t, b, c, i, j] = k
                        s["kept"] += int(k)
        steps.append(s)
    return keep, steps


def test_prune_stats_against_loops():
    block, cap = _block()
    x = (torch.rand(3, 2, 2, 5, 6) < 0.5).float()
    with record_prune_stats(block) as stats, torch.no_grad():
        block(x)
    d = stats.as_dict()[""]
    keep, steps = _by_hand(cap)
    n_ch, n = 2 * 4, 2 * 4 * 5 * 6
    assert 0 < keep.float().mean() < 1 and sum(s["prior_skip"] for s in steps) > 0
    assert d["gate_on_fraction"] == [s["gate_on"] / n_ch for s in steps]
    assert d["prior_channel_skip_fraction"] == [s["prior_skip"] / n_ch for s in steps]
    assert d["active_channel_fraction"] == [s["active"] / n_ch for s in steps]
    assert d["spatial_skip_fraction"] == [s["spatial_skip"] / n for s in steps]
    assert d["kept_fraction"] == [s["kept"] / n for s in steps]
    assert d["mean_kept_fraction"] == pytest.approx(sum(s["kept"] for s in steps) / (3 * n))
    assert d["mean_spatial_skip_fraction"] == pytest.approx(sum(s["spatial_skip"] for s in steps) / (3 * n))
    assert d["mean_active_channel_fraction"] == pytest.approx(sum(s["active"] for s in steps) / (3 * n_ch))


def test_prune_stats_add_up_over_batches():
    block, cap = _block(seed=1)
    xs = [(torch.rand(2, 3, 2, 4, 4) < 0.5).float() for _ in range(2)]
    counts = []
    with record_prune_stats(block) as stats, torch.no_grad():
        for x in xs:
            block(x)
            counts.append(_by_hand(cap)[1])
    d = stats.as_dict()[""]
    n_ch = 2 * 3 * 4
    for key, name in (
        ("gate_on", "gate_on_fraction"),
        ("kept", "kept_fraction"),
        ("spatial_skip", "spatial_skip_fraction"),
    ):
        per = 1 if key == "gate_on" else 16
        assert d[name] == [(a[key] + b[key]) / (n_ch * per) for a, b in zip(*counts)], name


def test_recorder_hands_over_input_module_and_keep_and_restores_the_prior():
    block, cap = _block(seed=2)
    prior = block.neuron.prior
    records = []
    rec = GateRecorder(block, lambda name, r: records.append(r))
    x = (torch.rand(3, 2, 2, 5, 6) < 0.5).float()
    block.neuron.record = True
    with torch.no_grad():
        block(x)
    rec.close()
    (r,) = records
    keep, _ = _by_hand(cap)
    assert r.module is block and torch.equal(r.x, x) and torch.equal(r.keep, keep)
    assert torch.equal(r.gate, cap["gate"]) and torch.equal(r.spatial_gate, cap["spatial"])
    assert r.prior_channel[0] is None and len(r.prior_channel) == 3
    assert prior.record is False and prior.records == []


def test_recorder_clears_stale_prior_records():
    block, _ = _block(seed=3)
    prior = block.neuron.prior
    prior.record = True  # left on by someone else: a plain forward piles up T - 1 masks
    with torch.no_grad():
        block((torch.rand(3, 1, 2, 4, 4) < 0.5).float())
    assert len(prior.records) == 2
    with record_prune_stats(block) as stats, torch.no_grad():
        block((torch.rand(3, 1, 2, 4, 4) < 0.5).float())  # must not see the stale masks
    assert len(stats.as_dict()[""]["kept_fraction"]) == 3


# -- gate ------------------------------------------------------------------------------------
def test_channel_importance_default_is_max_abs():
    current = torch.tensor([[[[[1.0, -3.0], [2.0, 0.5]], [[0.25, 0.5], [-0.75, 0.0]]]]])  # [1, 1, 2, 2, 2]
    assert channel_importance(current).tolist() == [[[3.0, 0.75]]]


def test_target_schedule_by_hand():
    gate = build_gate(2, 4, {"keep": 0.5, "warmup": 0.2, "ramp": 0.4}).train()
    for progress, expected in ((0.0, 1.0), (0.2, 1.0), (0.4, 0.75), (0.6, 0.5), (1.0, 0.5)):
        gate.progress = progress
        assert gate.current_keep() == pytest.approx(expected), progress
    no_ramp = build_gate(2, 4, {"keep": 0.5, "ramp": 0.0}).train()
    no_ramp.progress = 0.5
    assert no_ramp.current_keep() == 0.5  # no ramp: the target is the budget at once


def test_warmup_holds_gates_open_until_its_last_instant():
    gate = build_gate(2, 3, {"keep": 0.5, "warmup": 0.2, "init_bias": -8.0, "init_spread": 0.0}).train()
    x, cur = torch.ones(1, 1, 2, 2, 2), torch.randn(1, 1, 3, 2, 2)
    set_training_progress(gate, 0.1)
    assert gate(x, cur).all()  # warm-up: open whatever the predictor says
    set_training_progress(gate, 0.2)
    assert not gate(x, cur).any()  # warm-up over: the (closed) predictor decides


@pytest.mark.parametrize("detach", [True, False])
def test_predictor_input_detached_by_option(detach):
    torch.manual_seed(0)
    gate = build_gate(2, 3, {"detach_input": detach, "init_std": 1.0}).train()
    x = torch.rand(2, 1, 2, 3, 3, requires_grad=True)
    g = gate(x, torch.randn(2, 1, 3, 3, 3))
    (g.sum() + gate.last_loss).backward()
    assert (x.grad is None) == detach


def test_gate_refuses_inputs_without_time_and_batch_dims():
    gate = build_gate(2, 3, {})
    with pytest.raises(ValueError):
        gate(torch.ones(1, 2, 3, 3), torch.ones(1, 1, 3, 3, 3))
    with pytest.raises(ValueError):
        gate(torch.ones(1, 1, 2, 3, 3), torch.ones(1, 3, 3, 3))


def test_spatial_logits_of_a_non_square_map():
    torch.manual_seed(0)
    gate = build_gate(2, 3, {"learned_gate": False, "spatial_gate": True, "init_std": 1.0})
    x = torch.rand(2, 1, 2, 4, 6)
    sl = gate.spatial_logits(x, (4, 6))
    assert sl.shape == (2, 1, 1, 2, 3)  # one logit per 2x2 block of the 4x6 output
    pooled = F.avg_pool2d(x.reshape(2, 2, 4, 6), 2)  # block means
    w = gate.spatial_quant(gate.spatial_conv.weight)
    ref = F.conv2d(pooled, w, gate.spatial_conv.bias, padding=1).reshape(2, 1, 1, 2, 3)
    assert torch.allclose(sl, ref, atol=1e-6)


def test_spatial_gate_training_noise_loss_and_temperature():
    torch.manual_seed(0)
    opts = {
        "learned_gate": False,
        "spatial_gate": True,
        "init_std": 1.0,
        "spatial_init_bias": 0.0,
        "spatial_temperature": 2.0,
        "spatial_mass": 0.5,
    }
    gate = build_gate(2, 3, opts).train()
    x = (torch.rand(2, 1, 2, 4, 6) < 0.5).float()
    current = torch.randn(2, 1, 3, 4, 6)
    torch.manual_seed(11)
    g = gate(x, current)
    # the same draw, by hand: logistic noise log(u) - log(1 - u) added to the logits
    torch.manual_seed(11)
    sl = gate.spatial_logits(x, (4, 6)).detach()
    u = torch.rand(sl.shape).clamp(1e-6, 1 - 1e-6)
    p = torch.sigmoid((sl + torch.log(u) - torch.log(1 - u)) / 2.0)
    hard = (p >= 0.5).float()
    full = lambda a: a.repeat_interleave(2, 3).repeat_interleave(2, 4)  # noqa: E731
    assert torch.equal(gate.last_spatial, full(hard))
    assert torch.equal(g, full(hard))  # a spatial gate alone: [T, B, 1, H, W], broadcast over channels
    # loss: BCE of the logits against the mass-0.5 target of the block maxima of max_c |I|
    imp = F.max_pool2d(current.abs().amax(dim=2).reshape(2, 1, 4, 6), 2).reshape(2, 1, -1)
    target = mass_target(imp, 0.5).reshape(sl.shape)
    assert not torch.equal(target, mass_target(imp, 0.85).reshape(sl.shape))  # spatial_mass matters here
    ref = F.binary_cross_entropy_with_logits(sl, target)
    assert gate.last_loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # straight-through gradient: d gate / d logit = sigmoid'(noisy) / temperature, summed per block
    gate.zero_grad()
    g.sum().backward()
    per_block = (p * (1 - p) / 2.0) * 4  # every block covers 4 pixels
    assert gate.spatial_conv.bias.grad.item() == pytest.approx(float(per_block.sum()), rel=1e-5)


def test_spatial_gate_noise_is_centred():
    torch.manual_seed(0)
    opts = {"learned_gate": False, "spatial_gate": True, "init_std": 0.0, "spatial_init_bias": -2.0}
    gate = build_gate(2, 3, opts).train()
    gate(torch.zeros(4, 8, 2, 8, 8), torch.randn(4, 8, 3, 8, 8))
    # logit -2 plus logistic noise: on with probability sigmoid(-2) = 0.12 (512 blocks)
    assert abs(gate.last_spatial.float().mean().item() - 1 / (1 + math.exp(2))) < 0.05


def test_prior_level_of_a_membrane_without_levels():
    assert MembranePrior().level_for(object()) == -1.0
    assert MembranePrior().level_for(IntegerMembrane(-3, 3)) == -3.0
    assert MembranePrior(spatial_level=0.5).level_for(IntegerMembrane()) == 0.5


def test_prune_stats_of_a_single_neuron():
    torch.manual_seed(0)
    block = ConvBNLIF(1, 1, 1, neuron=LIF(membrane=IntegerMembrane()), gate=build_gate(1, 1, {})).eval()
    with record_prune_stats(block) as stats, torch.no_grad():
        block(torch.ones(1, 1, 1, 1, 1))
    d = stats.as_dict()[""]
    assert d["kept_fraction"] == [1.0] and d["mean_kept_fraction"] == 1.0  # gates start on


def test_gate_initialisation_follows_the_options():
    torch.manual_seed(0)
    spread = build_gate(4, 64, {"keep": 0.5, "init_std": 0.0, "init_bias": 1.0, "init_spread": 6.0})
    b = spread.predictor.bias.detach()
    assert 4.0 < float(b.max() - b.min()) <= 6.0 and abs(float(b.mean()) - 1.0) < 0.5  # 1 +- 3
    flat = build_gate(4, 64, {"keep": 0.5, "init_std": 0.0, "init_bias": 1.0, "init_spread": 0.0})
    assert torch.equal(flat.predictor.bias.detach(), torch.ones(64))
    sp = build_gate(64, 4, {"spatial_gate": True, "init_std": 0.01})
    w = sp.spatial_conv.weight.detach()
    assert abs(float(w.mean())) < 0.005 and 0.005 < float(w.std()) < 0.02


def test_gate_loss_before_any_forward_is_zero():
    from spquant.prune import gate_loss

    block = ConvBNLIF(2, 3, 3, neuron=LIF(), gate=build_gate(2, 3, {}))
    assert gate_loss(block).item() == 0.0


@pytest.mark.parametrize(
    "options",
    [
        {"predictor_bits": 32},
        {"predictor_bits": 16},
        {"predictor_bits": 2},
        {"warmup": 0.0, "ramp": 0.0, "min_keep": 0.0, "init_spread": 0.0},
        {"init_spread": 0.5},
        {"loss_weight": 0.0, "budget_weight": 0.0},
        {"spatial_mass": 1.0, "mass": 1.0, "keep": 1.0},
    ],
)
def test_prune_options_accepted_at_their_bounds(options):
    from spquant.prune import validate_prune_options

    merged = validate_prune_options(options)
    assert all(merged[k] == v for k, v in options.items())


@pytest.mark.parametrize(
    "options",
    [
        {"predictor_bits": 17},
        {"predictor_bits": 1},
        {"spatial_mass": 1.5},
        {"spatial_mass": 0.0},
        {"softmax_temperature": 0.0},
        {"spatial_temperature": 0.0},
        {"loss_weight": -0.1},
        {"spatial_block": 0},
        {"warmup": 1.0},
    ],
)
def test_prune_options_refused_outside_their_bounds(options):
    from spquant.prune import validate_prune_options

    with pytest.raises(ValueError, match="invalid prune option"):
        validate_prune_options(options)
