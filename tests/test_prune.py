"""Spatial-channel pruning (docs/method.md#pruning): mass target, learned gate, membrane prior, statistics."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.nn import functional as F

from spquant.layers import ConvBNLIF
from spquant.models import VGG9, QuantSpec, ResNet19
from spquant.neuron import LIF, lif_reference
from spquant.prune import (
    PRUNE_DEFAULTS,
    PRUNE_OPTION_DOCS,
    ChannelGate,
    MembranePrior,
    build_gate,
    build_prior,
    collect_prune_stats,
    gate_loss,
    mass_target,
    prune_loss_weight,
    record_prune_stats,
    validate_prune_options,
)
from spquant.quant import IntegerMembrane

pytestmark = pytest.mark.usefixtures("one_thread")


# -- mass target ------------------------------------------------------------------------------
def test_mass_target_hand_cases():
    imp = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert mass_target(imp).tolist() == [1, 1, 1, 0]  # 0.5 + 0.3 = 0.8 < 0.85 -> 3 channels
    assert mass_target(imp, mass=0.8).tolist() == [1, 1, 0, 0]  # exactly reaches 0.8 with 2
    assert mass_target(imp, mass=0.5).tolist() == [1, 0, 0, 0]
    assert mass_target(imp, mass=0.96).tolist() == [1, 1, 1, 1]
    assert mass_target(imp, mass=1.0).tolist() == [1, 1, 1, 1]
    # unnormalised and permuted: same selection, in place
    assert mass_target(torch.tensor([1.5, 10.0, 3.0, 6.0])).tolist() == [0, 1, 1, 1]
    # batched over leading dims, and along another dim
    batch = torch.stack([imp, imp.flip(0)])
    assert mass_target(batch).tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    assert mass_target(batch.T, dim=0).T.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    # nothing to compute -> nothing kept
    assert mass_target(torch.zeros(3)).tolist() == [0, 0, 0]


def test_gate_target_is_mass_of_ungated_current_per_sample_and_step():
    torch.manual_seed(0)
    gate = ChannelGate(3, 5, {"mass": 0.7}).train()
    x = (torch.rand(4, 2, 3, 6, 6) < 0.3).float()
    current = torch.randn(4, 2, 5, 6, 6, requires_grad=True)
    g = gate(x, current)
    assert g.shape == (4, 2, 5, 1, 1)
    expected = mass_target(current.detach().abs().amax(dim=(3, 4)), 0.7)
    assert torch.equal(gate.last_target, expected)
    assert not gate.last_target.requires_grad
    ref = F.binary_cross_entropy_with_logits(gate.logits(x), expected)
    assert torch.allclose(gate.last_loss, ref)
    gate.last_loss.backward()
    assert current.grad is None  # target detached: the loss never reaches the current


# -- learned gate -----------------------------------------------------------------------------
def test_gate_is_exactly_binary_starts_on_and_straight_through():
    torch.manual_seed(0)
    gate = build_gate(4, 6, {})
    x = (torch.rand(3, 2, 4, 5, 5) < 0.5).float()
    g = gate(x, torch.randn(3, 2, 6, 5, 5))
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert g.all()  # positive initial bias: every gate starts ON
    # straight-through: d g / d logits = sigmoid'(logits)
    gate.zero_grad()
    gate(x, torch.randn(3, 2, 6, 5, 5)).sum().backward()
    assert gate.predictor.bias.grad.abs().sum() > 0


def test_spatial_block_gate_shape_and_binary():
    torch.manual_seed(0)
    gate = build_gate(4, 6, {"spatial_gate": True, "spatial_init_bias": 0.0, "init_std": 1.0}).train()
    x = (torch.rand(2, 3, 4, 7, 7) < 0.5).float()
    g = gate(x, torch.randn(2, 3, 6, 7, 7))
    assert g.shape == (2, 3, 6, 7, 7)
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert gate.last_spatial.shape == (2, 3, 1, 7, 7)
    # 2x2 blocks: every block is constant
    s = gate.last_spatial[..., :6, :6].reshape(2, 3, 1, 3, 2, 3, 2)
    assert (s.amax(dim=(4, 6)) == s.amin(dim=(4, 6))).all()
    assert gate.last_loss is not None and gate.last_loss.requires_grad
    gate.last_loss.backward()
    assert gate.spatial_conv.weight.grad.abs().sum() > 0


def test_build_returns_none_when_switched_off():
    assert build_gate(3, 4, {"learned_gate": False}) is None
    assert build_prior({"channel_prior": False, "spatial_prior": False}) is None
    assert isinstance(build_gate(3, 4, {"learned_gate": False, "spatial_gate": True}), ChannelGate)
    p = build_prior({"spatial_prior": False, "channel_prior_threshold": -0.5})
    assert p.channel and not p.spatial and p.channel_threshold == -0.5


def test_predictor_receives_gradients_from_task_and_gate_loss():
    torch.manual_seed(0)
    opts = {}
    block = ConvBNLIF(4, 8, neuron=LIF(membrane=IntegerMembrane()), gate=build_gate(4, 8, opts))
    block.neuron.prior = build_prior(opts)
    x = (torch.rand(4, 3, 4, 8, 8) < 0.5).float()
    # task loss alone: straight-through estimator carries the gradient to the predictor
    block(x).sum().backward()
    assert block.gate.predictor.weight.grad.abs().sum() > 0
    block.zero_grad()
    # gate loss alone reaches the 1x1 conv too, and not the main conv (input and target detached)
    block(x)
    gate_loss(block).backward()
    assert block.gate.predictor.weight.grad.abs().sum() > 0
    assert block.gate.predictor.bias.grad.abs().sum() > 0
    assert block.conv.weight.grad is None or block.conv.weight.grad.abs().sum() == 0


def test_predictor_learns_the_mass_target():
    """A short training run: BCE falls and the gate agrees with the target far better than chance."""
    torch.manual_seed(0)
    C, H = 8, 6
    block = ConvBNLIF(C, C, 3, neuron=LIF(membrane=IntegerMembrane()), gate=build_gate(C, C, {}))
    with torch.no_grad():  # output channel c sees input channel c only
        block.conv.weight.zero_()
        for c in range(C):
            block.conv.weight[c, c] = 1.0 / 9
    block.eval()  # BN with fresh running stats = identity; the main layer is fixed
    gate = block.gate
    gate.compute_loss = True
    opt = torch.optim.Adam(gate.parameters(), lr=0.05)

    def batch(n=32, T=2):
        active = torch.rand(n, C) < 0.3
        active[torch.arange(n), torch.randint(0, C, (n,))] = True  # at least one active channel
        rate = active.float()[None, :, :, None, None] * 0.8
        return (torch.rand(T, n, C, H, H) < rate).float()

    def evaluate():
        x = batch(256)
        with torch.no_grad():
            gate(x, block.current(x))
        tgt = gate.last_target
        acc = (gate.last_gate == tgt).float().mean().item()
        majority = max(tgt.mean().item(), 1 - tgt.mean().item())
        return gate.last_loss.item(), acc, majority

    bce0, acc0, _ = evaluate()
    for _ in range(250):
        x = batch()
        with torch.no_grad():
            i = block.current(x)
        gate(x, i)
        opt.zero_grad()
        gate.last_loss.backward()
        opt.step()
    bce1, acc1, majority = evaluate()
    print(f"gate BCE {bce0:.3f} -> {bce1:.3f}; agreement {acc0:.3f} -> {acc1:.3f} (majority {majority:.3f})")
    assert bce1 < 0.3 * bce0
    assert acc1 > 0.9 and acc1 > majority + 0.15, (acc0, acc1, majority)


# -- membrane prior ---------------------------------------------------------------------------
def _hand_membrane():
    # B=1, C=3, H=1, W=4
    return torch.tensor([[[[-1.0, -1.0, -1.0, -1.0]], [[-1.0, -1.0, -1.0, 0.0]], [[-1.0, 0.0, 1.0, 0.0]]]])


def test_channel_prior_threshold():
    m = _hand_membrane()  # channel means: -1, -0.75, 0
    keep = MembranePrior(channel=True, spatial=False).keep_mask(m, IntegerMembrane())
    assert keep.shape == (1, 3, 1, 1)
    assert keep.flatten().tolist() == [0, 1, 1]
    keep = MembranePrior(channel=True, spatial=False, channel_threshold=-0.7).keep_mask(m, None)
    assert keep.flatten().tolist() == [0, 0, 1]
    keep = MembranePrior(channel=True, spatial=False, channel_threshold=-1.0).keep_mask(m, None)
    assert keep.flatten().tolist() == [1, 1, 1]


def test_spatial_prior_levels_and_switches():
    m = _hand_membrane()
    keep = MembranePrior(channel=False, spatial=True).keep_mask(m, IntegerMembrane())
    assert keep.shape == m.shape
    assert keep.tolist() == (m > -1).float().tolist()
    # lowest level of a wider grid
    m5 = torch.tensor([[[[-3.0, -2.0, -1.0, 0.0]]]])
    assert MembranePrior(channel=False).keep_mask(m5, IntegerMembrane(-3, 3)).flatten().tolist() == [
        0,
        1,
        1,
        1,
    ]
    assert MembranePrior(channel=False, spatial_level=-2).keep_mask(
        m5, IntegerMembrane(-3, 3)
    ).flatten().tolist() == [0, 0, 1, 1]
    # both on: AND of the two
    both = MembranePrior().keep_mask(m, IntegerMembrane())
    assert both.tolist() == ((m > -1) & torch.tensor([False, True, True]).view(1, 3, 1, 1)).float().tolist()
    assert MembranePrior(channel=False, spatial=False).keep_mask(m, None) is None
    # no spatial dims: channel prior does not apply
    assert MembranePrior(channel=True, spatial=False).keep_mask(torch.full((2, 3), -1.0), None) is None


def test_combined_gating_skips_if_either_says_skip():
    """Hand-made sequence through the LIF: channel prior, spatial prior and learned gate each skip."""
    mem = IntegerMembrane()
    # T=2, B=1, C=3, H=1, W=2. t=0: drive ch0 and ch1/pos0 to the lowest level -1.
    cur = torch.zeros(2, 1, 3, 1, 2)
    cur[0, 0, 0] = -1.0
    cur[0, 0, 1, 0, 0] = -1.0
    cur[1] = 1.4  # t=1: strong current everywhere
    gate = torch.ones(2, 1, 3, 1, 1)
    gate[1, 0, 2] = 0.0  # the learned gate switches channel 2 off at t=1
    thr = torch.tensor(1.0)
    s, m = lif_reference(cur, thr, 0.5, mem, gate=gate, prior=MembranePrior(), return_membrane=True)
    # ch0: channel prior skip -> u = -0.5 -> m = 0 (else u = 0.9 -> m = 1)
    assert m[1, 0, 0].flatten().tolist() == [0, 0]
    # ch1: pos0 spatial skip (m_prev = -1); pos1 kept (m_prev = 0 -> u = 1.4 spikes)
    assert m[1, 0, 1].flatten().tolist() == [0, 0]
    assert s[1, 0, 1].flatten().tolist() == [0, 1]
    # ch2: gated off -> zero current, no spike
    assert s[1, 0, 2].flatten().tolist() == [0, 0]
    # without prior and gate the same sequence differs in every one of those places
    s0, m0 = lif_reference(cur, thr, 0.5, mem, return_membrane=True)
    assert m0[1, 0, 0].flatten().tolist() == [1, 1]
    assert m0[1, 0, 1, 0, 0].item() == 1
    assert s0[1, 0, 2].flatten().tolist() == [1, 1]
    # channel prior only: ch1 pos0 is updated again
    _, m1 = lif_reference(cur, thr, 0.5, mem, prior=MembranePrior(spatial=False), return_membrane=True)
    assert m1[1, 0, 0].flatten().tolist() == [0, 0] and m1[1, 0, 1, 0, 0].item() == 1


def test_gated_channels_get_zero_current_in_block():
    torch.manual_seed(0)
    block = ConvBNLIF(3, 4, neuron=LIF(membrane=IntegerMembrane()), gate=build_gate(3, 4, {"init_std": 0.0}))
    with torch.no_grad():
        block.gate.predictor.bias.copy_(torch.tensor([5.0, -5.0, 5.0, -5.0]))
        block.conv.weight.fill_(1.0)
    block.eval()
    x = torch.ones(3, 2, 3, 6, 6)
    out = block(x)
    assert out[:, :, [1, 3]].sum() == 0
    assert out[:, :, [0, 2]].sum() > 0


# -- options -------------------------------------------------------------------------------------
def test_options_documented_and_validated():
    assert set(PRUNE_DEFAULTS) == set(PRUNE_OPTION_DOCS)
    assert PRUNE_DEFAULTS["mass"] == 0.85 and PRUNE_DEFAULTS["channel_prior_threshold"] == -0.8
    assert PRUNE_DEFAULTS["binarize_at"] == 0.5 and PRUNE_DEFAULTS["learned_gate"] is True
    assert validate_prune_options({"mass": 1})["mass"] == 1
    with pytest.raises(ValueError, match="mas"):
        validate_prune_options({"mas": 0.9})
    with pytest.raises(ValueError, match="learned_gate"):
        validate_prune_options({"learned_gate": 1})
    with pytest.raises(ValueError, match="mass"):
        validate_prune_options({"mass": "0.9"})
    with pytest.raises(ValueError, match="mass"):
        validate_prune_options({"mass": 1.5})
    with pytest.raises(ValueError, match="binarize_at"):
        validate_prune_options({"binarize_at": 1.0})
    with pytest.raises(ValueError, match="spatial_block"):
        validate_prune_options({"spatial_block": 2.0})
    with pytest.raises(ValueError, match="channel_prior_thresh"):
        QuantSpec(mode="spquant", prune={"channel_prior_thresh": -0.5})
    QuantSpec(mode="spquant", prune={"channel_prior_threshold": -0.5, "spatial_prior": False})


def test_prune_loss_weight():
    assert prune_loss_weight({}) == PRUNE_DEFAULTS["loss_weight"]
    assert prune_loss_weight({"loss_weight": 0.3}) == 0.3
    assert prune_loss_weight(QuantSpec(mode="spquant", prune={"loss_weight": 0.2})) == 0.2
    assert prune_loss_weight(QuantSpec(mode="quant")) == 0.0


# -- models ------------------------------------------------------------------------------------
def test_vgg9_spquant_trains_with_gate_loss_in_graph():
    torch.manual_seed(0)
    spec = QuantSpec(mode="spquant", prune={"loss_weight": 0.5})
    net = VGG9(4, in_channels=2, input_size=(16, 16), width=0.0625, spec=spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = (torch.rand(2, 4, 2, 16, 16) < 0.3).float()
    y = torch.randint(0, 4, (4,))
    gates = [m for m in net.modules() if isinstance(m, ChannelGate)]
    assert len(gates) == 8
    before = [g.predictor.weight.detach().clone() for g in gates]
    losses = []
    for _ in range(3):
        out = net(x)
        gl = gate_loss(net)
        assert gl.dim() == 0 and gl.requires_grad and gl > 0
        loss = F.cross_entropy(out.mean(0), y) + prune_loss_weight(spec) * gl
        opt.zero_grad()
        loss.backward()
        assert all(
            g.predictor.weight.grad is not None and g.predictor.weight.grad.abs().sum() > 0 for g in gates
        )
        opt.step()
        losses.append(gl.item())
    assert all(not torch.equal(b, g.predictor.weight) for b, g in zip(before, gates))
    assert losses[-1] < losses[0]


def test_gate_loss_zero_without_gates_and_in_eval():
    net = VGG9(4, 2, (16, 16), width=0.0625, spec=QuantSpec(mode="quant"))
    net(torch.zeros(1, 1, 2, 16, 16))
    z = gate_loss(net)
    assert z.dim() == 0 and z.item() == 0.0
    sp = VGG9(4, 2, (16, 16), width=0.0625, spec=QuantSpec(mode="spquant")).eval()
    sp(torch.zeros(1, 1, 2, 16, 16))
    assert gate_loss(sp).item() == 0.0


def test_resnet19_spquant_has_gate_on_first_conv_of_blocks():
    net = ResNet19(10, 3, width=0.0625, spec=QuantSpec(mode="spquant", weight_bits=4))
    assert len([m for m in net.modules() if isinstance(m, ChannelGate)]) == 8
    net(torch.rand(2, 2, 3, 32, 32)).sum().backward()
    assert gate_loss(net).requires_grad


def test_prior_and_model_pickle_and_deepcopy():
    net = VGG9(4, 2, (16, 16), width=0.0625, spec=QuantSpec(mode="spquant"))
    prior = net.features[0].neuron.prior
    prior.record = True
    prior.records.append((None, None))
    p2 = pickle.loads(pickle.dumps(prior))
    assert p2.records == [] and p2.record is False and p2.channel_threshold == -0.8
    prior.record, prior.records = False, []
    net.eval()
    x = (torch.rand(2, 3, 2, 16, 16) < 0.3).float()
    twin = copy.deepcopy(net)
    assert twin.features[0].neuron.prior is not prior
    assert torch.equal(twin(x), net(x))


# -- statistics --------------------------------------------------------------------------------
def test_prune_stats_per_layer_and_step():
    torch.manual_seed(0)
    # channel prior that skips every channel at t > 0 (threshold above every level)
    spec = QuantSpec(mode="spquant", prune={"channel_prior_threshold": 5.0, "spatial_prior": False})
    net = VGG9(4, 2, (16, 16), width=0.0625, spec=spec)
    x = (torch.rand(3, 2, 2, 16, 16) < 0.4).float()
    stats = collect_prune_stats(net, [x, (x, torch.zeros(2))])
    assert net.training  # mode restored
    assert len(stats) == 8
    s = stats["features.0"]
    assert s["active_channel_fraction"] == [1.0, 0.0, 0.0]
    assert s["prior_channel_skip_fraction"] == [0.0, 1.0, 1.0]
    assert s["kept_fraction"] == [1.0, 0.0, 0.0]
    assert s["spatial_skip_fraction"] == [0.0, 0.0, 0.0]
    assert 0 <= s["spike_rate"] <= 1
    assert set(s["level_counts"]) == {-1, 0, 1}
    assert sum(s["level_counts"].values()) == 2 * 3 * 2 * 4 * 16 * 16  # 2 batches x T x B x C x H x W
    # recording flags restored
    assert not net.features[0].neuron.record and not net.features[0].neuron.prior.record


def test_prune_stats_spatial_and_gate():
    torch.manual_seed(0)
    spec = QuantSpec(mode="spquant", prune={"channel_prior": False, "spatial_prior_level": 0.5})
    net = VGG9(4, 2, (16, 16), width=0.0625, spec=spec).eval()
    g = net.features[1].gate
    with torch.no_grad():
        g.predictor.bias[: g.c_out // 2] = -10.0  # half the channels off
    x = (torch.rand(2, 2, 2, 16, 16) < 0.4).float()
    with record_prune_stats(net) as st, torch.no_grad():
        net(x)
    s = st.as_dict()["features.1"]
    assert s["gate_on_fraction"] == [0.5, 0.5]
    assert s["active_channel_fraction"] == [0.5, 0.5]
    # spatial prior with level 0.5 skips every neuron whose stored state is <= 0 at t = 1
    assert s["spatial_skip_fraction"][0] == 0.0 and s["spatial_skip_fraction"][1] > 0.5
    assert s["kept_fraction"][1] <= 0.5


def test_predictor_weights_quantized_by_option():
    from spquant.quant import IdentityWeight, SAWBWeight, TernaryWeight

    g8 = build_gate(16, 8, {})
    assert isinstance(g8.predictor_quant, SAWBWeight) and g8.predictor_quant.bits == 8
    codes, _ = g8.predictor_quant.to_int(g8.predictor.weight)
    assert codes.abs().max() <= 127
    assert isinstance(build_gate(16, 8, {"predictor_bits": None}).predictor_quant, IdentityWeight)
    assert isinstance(build_gate(16, 8, {"predictor_bits": 2}).predictor_quant, TernaryWeight)
    g = build_gate(16, 8, {"predictor_bits": 2, "init_std": 1.0})
    x = (torch.rand(2, 3, 16, 4, 4) < 0.5).float()
    s = torch.softmax(x.mean((3, 4)), -1) * 16
    w = g.predictor_quant(g.predictor.weight)
    assert len(w.unique()) <= 3
    expected = torch.nn.functional.conv2d(s.reshape(6, 16, 1, 1), w, g.predictor.bias).reshape(2, 3, 8)
    assert torch.allclose(g.logits(x), expected)
    with pytest.raises(ValueError, match="predictor_bits"):
        validate_prune_options({"predictor_bits": 1})
