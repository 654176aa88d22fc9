"""The counting hooks on plain conv / linear modules (outside ConvBNLIF), against loops written here:
non-square kernels and outputs, linear layers fed [T, B, F], several batches, analog then spike input,
modules called once per time step, and the state the counter must restore."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from spquant.cost import measure_cost
from spquant.layers import ConvBNLIF
from spquant.models import VGG9, QuantSpec

pytestmark = pytest.mark.usefixtures("one_thread")


class _PlainNet(nn.Module):
    """conv 2->4, kernel 1x3, padding (0, 1) on a 5x7 input, then a linear layer applied to [T, B, F]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, (1, 3), padding=(0, 1), bias=False)
        self.fc = nn.Linear(4 * 5 * 7, 3)

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.conv(x.flatten(0, 1))
        self.spikes = (y > 0).float().reshape(T, B, -1)
        return self.fc(self.spikes)


def _conv_sops_by_loops(x):
    """SOPs of the 1x3 conv of one step: per output (b, o, i, j), nonzero inputs at (ci, i, j-1..j+1)."""
    B, C, H, W = x.shape
    n = 0
    for b in range(B):
        for i in range(H):
            for j in range(W):
                for ci in range(C):
                    for jj in (j - 1, j, j + 1):
                        if 0 <= jj < W and x[b, ci, i, jj] != 0:
                            n += 4  # every one of the 4 output channels
    return n


def test_plain_conv_and_linear_counts_by_hand():
    torch.manual_seed(5)
    net = _PlainNet().eval()
    T = 3
    analog = torch.randn(T, 2, 2, 5, 7)  # B = 2, real-valued input
    spikes = (torch.rand(T, 3, 2, 5, 7) < 0.3).float()  # B = 3, binary input
    expected = {"conv": [0.0] * T, "fc": [0.0] * T}
    with torch.no_grad():
        for x in (analog, spikes):
            net(x)
            for t in range(T):
                expected["conv"][t] += _conv_sops_by_loops(x[t])
                expected["fc"][t] += float((net.spikes[t] != 0).sum()) * 3
    cost = measure_cost(net, [analog, (spikes, torch.zeros(3))])  # a bare tensor and an (x, y) tuple
    layers = {lc["name"]: lc for lc in cost.layers}
    conv, fc = layers["conv"], layers["fc"]
    assert (conv["kind"], conv["macs_per_output"]) == ("conv", 2 * 1 * 3)
    assert (fc["kind"], fc["macs_per_output"]) == ("linear", 140)
    # dense = samples x C_out*H'*W' x C_in*kh*kw per step, summed over the batches of 2 and 3 samples
    assert conv["dense_macs"] == [5 * 140 * 6] * T == conv["kept_macs"]
    assert fc["dense_macs"] == [5 * 140 * 3] * T == fc["kept_macs"]
    assert conv["overhead_macs"] == [0] * T == fc["overhead_macs"]
    assert conv["sops"] == expected["conv"] and fc["sops"] == expected["fc"]
    # the conv saw analog input once: it stays a MAC layer; the linear layer only ever saw spikes
    assert conv["spike_input"] is False and fc["spike_input"] is True
    assert cost.samples == 5 and cost.T == T
    assert cost.dense_macs == pytest.approx(T * 140 * (6 + 3))
    assert cost.effective_ops == pytest.approx((sum(conv["kept_macs"]) + sum(expected["fc"])) / 5)
    assert cost.membrane_updates == 0 and cost.skipped_updates == 0
    # max_batches: only the first batch is counted
    first = measure_cost(net, [analog, spikes], max_batches=1)
    assert first.samples == 2 and first.dense_macs == pytest.approx(T * 140 * 9)


class _StepLoopNet(nn.Module):
    """Calls its conv once per time step on [B, C, H, W] (B = 3 is not a multiple of T = 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.stack([self.conv(x[t]) for t in range(x.shape[0])])


def test_module_called_per_step_is_counted_as_one_step():
    net = _StepLoopNet().eval()
    x = (torch.rand(2, 3, 1, 4, 4) < 0.5).float()
    cost = measure_cost(net, [x])
    (lc,) = cost.layers
    # a leading dim that is not a multiple of T is one step: both calls land on t = 0
    assert lc["dense_macs"] == [2 * 3 * 2 * 16 * 9]
    assert cost.dense_macs == pytest.approx(2 * 2 * 16 * 9)


def test_counter_restores_neuron_state():
    torch.manual_seed(0)
    net = VGG9(3, in_channels=1, input_size=(6, 6), plan=[4], spec=QuantSpec(mode="spquant")).eval()
    neurons = [m.neuron for m in net.modules() if isinstance(m, ConvBNLIF)]
    assert neurons and all(n.record is False for n in neurons)
    measure_cost(net, [(torch.rand(2, 2, 1, 6, 6) < 0.5).float()])
    assert all(n.record is False and n.last_membrane is None for n in neurons)


def _ones_net():
    net = _PlainNet().eval()
    with torch.no_grad():
        net.conv.weight.fill_(1.0)  # every output of an all-ones input is positive: 140 spikes
    return net


# all-ones input 2x5x7, one sample, one step: conv dense 140 outputs x 6 = 840 MACs; its SOPs per
# output channel = 2 input channels x 5 rows x (2 + 3*5 + 2 in-range taps) = 190, x 4 channels = 760;
# the linear layer sees 140 spikes: 140 x 3 = 420 dense MACs and 420 SOPs. Parameters: 24 + 420 + 3.
STATIC_TEXT = """static cost of plain, input 2x5x7 (per sample, per time step)
  1 MB = 10^6 bytes
  parameters            447
  params by bits        447 @ 32 b
  weight memory         0.0018 MB   (BN: count)
    by kind             weight 0.0018, bias 0.0000
  LIF neurons           0
  membrane @ 32 bits    0.0000 MB
  membrane @ 32 bits    0.0000 MB   (paper convention)
  membrane @ 32 bits  0.0000 MB   (packed)
  total                 0.0018 MB   (packed: 0.0018 MB)
  total, all FP32       0.0018 MB
  memory reduction      1.00x   (packed: 1.00x)
  dense MACs            1,260"""

# energies: fp32 1180 SOPs x 0.9 pJ = 1062 pJ, dense 1260 x 4.6 = 5796 pJ; int32 118 / 4032 pJ;
# int8 35.4 / 289.8 pJ
MEASURED_TEXT = """measured cost of plain: 1 samples, T=1 (per sample, all steps)
  dense MACs            1,260
  kept MACs             1,260
  predictor overhead    0
  SOPs                  1,180
  membrane updates      0 (skipped 0)
  FLOPs reduction       1.00x   = dense / (kept + overhead)
  effective reduction   1.07x   = dense / (SOPs or kept MACs + overhead)
  three accountings:
    dense_mac_reduction        1.00x   = dense / (kept MACs + overhead)
    effective_op_reduction     1.07x   = dense / (SOPs into kept outputs + membrane updates + overhead)
    paper_convention_reduction 1.00x   (authors' convention, B = -)
  kept_fraction (gated layers) 1.000
  energy ESTIMATES (arithmetic only; Horowitz ISSCC 2014, 45 nm):
    45nm-fp32         0.001 uJ   (dense MAC network: 0.006 uJ)
    45nm-int32        0.000 uJ   (dense MAC network: 0.004 uJ)
    45nm-int8         0.000 uJ   (dense MAC network: 0.000 uJ)"""


def test_reports_of_a_tiny_model_written_out_by_hand():
    from spquant.cost import format_measured, format_static, static_cost

    net = _ones_net()
    assert format_static(static_cost(net, (2, 5, 7)), "plain") == STATIC_TEXT
    assert format_static(static_cost(net, (2, 5, 7))).startswith("static cost, input 2x5x7 (")
    m = measure_cost(net, [torch.ones(1, 1, 2, 5, 7)])
    assert (m.sops, m.effective_ops) == (1180, 1180)
    assert format_measured(m, "plain") == MEASURED_TEXT
    assert format_measured(m).startswith("measured cost: 1 samples")
    d = m.to_dict()
    assert d["note"].startswith("counts per sample (all T steps); energies are estimates")
    two = dataclasses.replace(m, paper_convention={"batch_sizes": [2, 4]})
    assert "paper_convention_reduction 1.00x   (authors' convention, B = 2, 4)\n" in format_measured(two)
    assert d["sops"] == 1180 and d["paper_convention_reduction"] == 1.0


def test_cost_report_keys_by_hand():
    from spquant.cost import cost_report

    net = _ones_net()
    x = torch.ones(1, 2, 2, 5, 7)  # T = 1, two samples
    r = cost_report(net, (2, 5, 7), [x, x, torch.zeros_like(x)], max_batches=2)  # the zeros are not seen
    mb = 447 * 32 / 8 / 1e6
    expected = {
        "params": 447,
        "lif_neurons": 0,
        "memory_mb": mb,
        "memory_mb_packed": mb,
        "memory_mb_fp32": mb,
        "memory_reduction": 1.0,
        "memory_reduction_packed": 1.0,
        "dense_macs_per_step": 1260,
        "dense_mac_reduction": 1.0,
        "effective_op_reduction": 1260 / 1180,
        "paper_convention_reduction": 1.0,
        "paper_convention_batch_sizes": [],
        "kept_fraction": 1.0,
        "kept_fraction_by_layer": {},
        "flops_reduction": 1.0,
        "effective_reduction": 1260 / 1180,
        "kept_macs_per_sample": 1260,
        "sops_per_sample": 1180,
        "overhead_macs_per_sample": 0,
        "skipped_update_fraction": 0.0,
        "energy_uj_45nm_fp32": 1180 * 0.9 / 1e6,
        "energy_uj_45nm_int8": 1180 * 0.03 / 1e6,
    }
    assert set(r) == set(expected)
    for k, v in expected.items():
        assert r[k] == pytest.approx(v, rel=1e-9), k
    static_only = cost_report(net, (2, 5, 7))
    assert set(static_only) == set(list(expected)[:8])


def test_cost_report_skipped_fraction_of_a_gated_layer():
    from spquant.cost import cost_report

    torch.manual_seed(0)
    spec = QuantSpec(mode="spquant", prune={"init_std": 3.0, "init_bias": 0.0})
    net = VGG9(3, in_channels=1, input_size=(6, 6), plan=[4], spec=spec).eval()
    x = (torch.rand(2, 3, 1, 6, 6) < 0.5).float()
    r = cost_report(net, (1, 6, 6), [x])
    # the only LIF layer is the gated conv, and every one of its neurons costs the same MACs: the
    # skipped share of its membrane updates is the share of its MACs that were not kept
    assert 0 < r["kept_fraction"] < 1
    assert r["skipped_update_fraction"] == pytest.approx(1 - r["kept_fraction"], rel=1e-9)
    assert r["paper_convention_batch_sizes"] == [3]


def test_spatial_only_gate_counted_at_its_quantizer_bits():
    from spquant.cost import MB, static_cost
    from spquant.neuron import LIF
    from spquant.prune import build_gate

    gate = build_gate(2, 4, {"learned_gate": False, "spatial_gate": True})
    assert gate.predictor is None and gate.spatial_conv is not None
    net = nn.Sequential(ConvBNLIF(2, 4, 3, neuron=LIF(), gate=gate))
    c = static_cost(net, (2, 5, 7))
    # the spatial conv C_in -> 1, 3x3: 18 weights at the predictor quantizer's 8 bits, one 32-bit bias
    assert c.weight_memory_mb_by_kind["gate"] == pytest.approx((18 * 8 + 32) / 8 / MB, rel=1e-12)
    c0 = static_cost(net, (2, 5, 7), gate_bits=0)
    assert "gate" not in c0.weight_memory_mb_by_kind


def test_linear_layer_fed_analog_once_is_a_mac_layer():
    lin = nn.Linear(4, 2).eval()
    cost = measure_cost(lin, [torch.randn(2, 3, 4), (torch.rand(2, 3, 4) < 0.5).float()])
    (lc,) = cost.layers
    assert lc["spike_input"] is False and lc["dense_macs"] == [6 * 8, 6 * 8]


def test_ungated_block_counts_dense_and_is_a_mac_layer_after_analog_input():
    from spquant.neuron import LIF

    net = nn.Sequential(ConvBNLIF(2, 3, 3, neuron=LIF())).eval()
    analog, spikes = torch.randn(2, 1, 2, 4, 5), (torch.rand(2, 2, 2, 4, 5) < 0.5).float()
    cost = measure_cost(net, [analog, spikes])
    (lc,) = cost.layers
    assert (lc["kind"], lc["macs_per_output"]) == ("conv", 18)  # no gate, no prior
    assert lc["spike_input"] is False
    assert lc["dense_macs"] == [3 * 3 * 20 * 18] * 2 == lc["kept_macs"]  # 3 samples x C_out*H*W x 18
    assert lc["skipped_updates"] == [0, 0] and lc["overhead_macs"] == [0, 0]


class _KindsNet(nn.Module):
    """A conv with bias, a BatchNorm, a free parameter and an (unused here) channel gate."""

    def __init__(self):
        super().__init__()
        from spquant.prune import build_gate

        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.ones(()))
        self.gate = build_gate(2, 4, {})

    def forward(self, x):
        T, B = x.shape[:2]
        return self.bn(self.conv(x.flatten(0, 1))).reshape(T, B, -1) * self.scale


def test_weight_memory_by_kind_by_hand():
    from spquant.cost import format_static, static_cost

    c = static_cost(_KindsNet(), (2, 5, 7))
    # bytes: conv weight 72 x 4, bias 4 x 4, BN 8 x 4, the free scalar 4, gate 8 weights x 1 + 4 biases x 4
    assert c.weight_memory_mb_by_kind == pytest.approx(
        {"weight": 288e-6, "bias": 16e-6, "bn": 32e-6, "gate": 24e-6, "other": 4e-6}, rel=1e-12
    )
    assert c.params_by_bits == {8.0: 8, 32.0: 72 + 4 + 8 + 1 + 4}
    assert "\n  params by bits        8 @ 8 b, 89 @ 32 b\n" in format_static(c)
    d = c.to_dict()
    assert d["input_shape"] == [2, 5, 7] and d["params_by_bits"] == {"8.0": 8, "32.0": 89}
    ignored = static_cost(_KindsNet(), (2, 5, 7), bn="ignore")
    assert "bn" not in ignored.weight_memory_mb_by_kind and ignored.params_by_bits == {8.0: 8, 32.0: 81}
