"""Cost accounting (docs/method.md#accountings, #memory): static figures and measured counts against
brute force."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spquant.cli import main as cli_main
from spquant.cost import (
    ENERGY_PRESETS,
    MB,
    conv_sops,
    cost_report,
    format_measured,
    format_static,
    measure_cost,
    static_cost,
)
from spquant.layers import ConvBNLIF, QLinear, SeqModule
from spquant.models import VGG9, QuantSpec, ResNet19
from spquant.neuron import LIF, lif_reference
from spquant.prune import MembranePrior, build_gate
from spquant.quant import IntegerMembrane, TernaryWeight

pytestmark = pytest.mark.usefixtures("one_thread")


VGG_CONVS = [(64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]


# -- static ------------------------------------------------------------------------------------
def test_vgg9_paper_membrane_figures():
    c = static_cost(VGG9(10, 3, (48, 48), spec=QuantSpec(mode="quant")), (3, 48, 48))
    assert c.lif_neurons == 921_600
    assert c.membrane_mb_fp32 == pytest.approx(3.6864, abs=1e-12)
    assert c.membrane_mb_paper == pytest.approx(0.2304, abs=1e-12)  # ternary at 2 bits
    assert c.membrane_mb_packed == pytest.approx(0.18432, abs=1e-12)  # 1.6 bits
    assert c.membrane_bits == 2 and c.membrane_packed_bits == 1.6
    fp = static_cost(VGG9(10, 3, (48, 48), spec=QuantSpec(mode="fp32")), (3, 48, 48))
    assert fp.membrane_mb_paper == pytest.approx(3.6864) and fp.membrane_bits == 32


def test_resnet19_neurons():
    c = static_cost(ResNet19(10, 3, spec=QuantSpec(mode="quant", weight_bits=4)), (3, 32, 32))
    assert c.lif_neurons == 1_442_048
    assert c.membrane_mb_fp32 == pytest.approx(1_442_048 * 4 / MB)


def test_vgg9_params_weight_memory_and_macs_by_hand():
    first = 3 * 64 * 9
    mid = sum(a * b * 9 for a, b in VGG_CONVS)
    fc = 512 * 3 * 3 * 10
    bn = 2 * (64 + 128 + 256 + 256 + 4 * 512)
    c = static_cost(VGG9(10, 3, (48, 48), spec=QuantSpec(mode="quant")), (3, 48, 48))
    assert c.params == first + mid + fc + 10 + bn  # 9,269,322
    # hidden convs ternary (2 bits), first conv and classifier 8 bits [choice, docs/method.md#weight-quantizers], BN + bias 32
    assert c.params_by_bits == {2.0: mid, 8.0: first + fc, 32.0: bn + 10}
    assert c.weight_memory_mb == pytest.approx((2 * mid + 8 * (first + fc) + 32 * (bn + 10)) / 8 / MB)
    assert c.total_mb == pytest.approx(c.weight_memory_mb + 0.2304)
    assert c.total_mb_fp32 == pytest.approx((first + mid + fc + 10 + bn) * 4 / MB + 3.6864)
    # dense MACs per sample per step
    macs = 48 * 48 * first  # first = 3 * 64 * 9 MACs per output position
    sizes = [48, 24, 24, 12, 12, 6, 6]
    macs += sum(s * s * a * b * 9 for s, (a, b) in zip(sizes, VGG_CONVS))
    assert c.dense_macs == macs + fc == 1_362_981_888
    # overriding weight bits: every conv / linear weight at 2 bits; BN ignored
    c2 = static_cost(
        VGG9(10, 3, (48, 48), spec=QuantSpec(mode="quant")), (3, 48, 48), weight_bits=2, bn="ignore"
    )
    assert c2.params_by_bits == {2.0: first + mid + fc, 32.0: 10}
    # membrane override 1.58 bits
    c3 = static_cost(VGG9(10, 3, (48, 48), spec=QuantSpec(mode="quant")), (3, 48, 48), membrane_bits=1.58)
    assert c3.membrane_mb_paper == pytest.approx(921_600 * 1.58 / 8 / MB)


def test_paper_vgg9_totals_not_reproduced_by_the_stated_architecture():
    """docs/method.md#memory quotes 48.58 MB (FP32) -> 3.75 MB. The VGG-9 of docs/method.md#models (8 convs + FC, 3x48x48,
    10 classes) has 9.27 M parameters -> 40.76 MB at FP32; 48.58 MB would need ~11.22 M parameters
    at 32 bits. We reproduce the membrane figures exactly, not the totals (docs/pruning_and_cost.md)."""
    fp = static_cost(VGG9(10, 3, (48, 48), spec=QuantSpec(mode="fp32")), (3, 48, 48))
    assert fp.total_mb == pytest.approx(40.7637, abs=1e-4)
    q = static_cost(
        VGG9(10, 3, (48, 48), spec=QuantSpec(mode="quant", first_bits=2, last_bits=2)),
        (3, 48, 48),
        bn="ignore",
    )
    # all weights ternary, ternary membrane at 2 bits: 9.26 M x 2 bits + 0.2304 MB
    assert q.total_mb == pytest.approx(2.5464, abs=1e-4)
    assert q.total_mb_fp32 / q.total_mb == pytest.approx(16.0, abs=0.01)


def test_spquant_gate_params_counted_separately():
    c = static_cost(VGG9(10, 3, (48, 48), width=0.25, spec=QuantSpec(mode="spquant")), (3, 48, 48))
    c0 = static_cost(
        VGG9(10, 3, (48, 48), width=0.25, spec=QuantSpec(mode="spquant")), (3, 48, 48), gate_bits=0
    )
    assert c.weight_memory_mb_by_kind["gate"] > 0 and "gate" not in c0.weight_memory_mb_by_kind
    assert c.weight_memory_mb - c0.weight_memory_mb == pytest.approx(c.weight_memory_mb_by_kind["gate"])
    # predictor weights at their quantizer's 8 bits, biases at 32
    gates = [
        m
        for m in VGG9(10, 3, (48, 48), width=0.25, spec=QuantSpec(mode="spquant")).modules()
        if hasattr(m, "predictor_quant")
    ]
    w = sum(g.predictor.weight.numel() for g in gates)
    b = sum(g.predictor.bias.numel() for g in gates)
    assert c.weight_memory_mb_by_kind["gate"] == pytest.approx((8 * w + 32 * b) / 8 / MB)
    c32 = static_cost(
        VGG9(10, 3, (48, 48), width=0.25, spec=QuantSpec(mode="spquant")), (3, 48, 48), gate_bits=32
    )
    assert c32.weight_memory_mb_by_kind["gate"] == pytest.approx((32 * w + 32 * b) / 8 / MB)
    assert "10^6" in format_static(c)


# -- brute force -------------------------------------------------------------------------------
def brute_force_conv(x, w, stride, pad, keep):
    """Naive loop conv of one step that counts every multiply it performs.

    x [B, Cin, H, W], w [Cout, Cin, k, k], keep bool [B, Cout, Ho, Wo]. Only kept outputs are
    computed; a multiply with a padded position still counts as a MAC (dense convention) but never
    as an SOP; an SOP is a multiply whose input is nonzero. Returns (macs, sops, out)."""
    B, Cin, H, W = x.shape
    Cout, _, k, _ = w.shape
    Ho, Wo = keep.shape[2:]
    xl, wl, kl = x.tolist(), w.tolist(), keep.tolist()
    macs = sops = 0
    out = torch.zeros(B, Cout, Ho, Wo, dtype=torch.float64)
    for b in range(B):
        for co in range(Cout):
            for oy in range(Ho):
                for ox in range(Wo):
                    if not kl[b][co][oy][ox]:
                        continue
                    acc = 0.0
                    for ci in range(Cin):
                        for ky in range(k):
                            for kx in range(k):
                                iy, ix = oy * stride - pad + ky, ox * stride - pad + kx
                                v = xl[b][ci][iy][ix] if (0 <= iy < H and 0 <= ix < W) else 0.0
                                macs += 1
                                if v != 0:
                                    sops += 1
                                    acc += v * wl[co][ci][ky][kx]
                    out[b, co, oy, ox] = acc
    return macs, sops, out


def _tiny_net(seed=0, spatial_gate=False):
    torch.manual_seed(seed)
    opts = {"init_std": 3.0, "init_bias": 0.0, "spatial_gate": spatial_gate, "spatial_init_bias": 0.0}
    mem = IntegerMembrane()

    def block(cin, cout, stride):
        b = ConvBNLIF(
            cin,
            cout,
            3,
            stride=stride,
            weight_quant=TernaryWeight(),
            neuron=LIF(membrane=mem, threshold=0.5),
            gate=build_gate(cin, cout, opts),
        )
        b.neuron.prior = MembranePrior(channel=True, channel_threshold=-0.4, spatial=True)
        return b

    net = nn.Sequential(
        block(2, 4, 1), block(4, 6, 2), SeqModule(nn.Flatten()), SeqModule(QLinear(6 * 3 * 3, 3))
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # random BN so currents have both signs
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 2.0)
    return net.eval()


def _reference_keep(block, x):
    """Keep mask of a ConvBNLIF computed independently: gate x prior from the LIF's own membrane."""
    with torch.no_grad():
        i = block.current(x)
        g = block.gate(x, i)
        prior = MembranePrior(
            block.neuron.prior.channel, block.neuron.prior.channel_threshold, block.neuron.prior.spatial
        )
        s, m = lif_reference(
            i,
            block.neuron.threshold_for(i),
            block.neuron.tau,
            block.neuron.membrane,
            gate=g,
            prior=prior,
            return_membrane=True,
        )
        keep = (g.expand_as(i) > 0).clone()
        for t in range(1, i.shape[0]):
            keep[t] &= prior.keep_mask(m[t - 1], block.neuron.membrane).expand_as(i[t]) > 0
    return keep, s


@pytest.mark.parametrize("spatial_gate", [False, True])
def test_measured_counts_match_brute_force(spatial_gate):
    net = _tiny_net(1, spatial_gate)
    T, B = 3, 2
    x = (torch.rand(T, B, 2, 6, 6) < 0.5).float()
    cost = measure_cost(net, [x])
    layers = {lc["name"]: lc for lc in cost.layers}
    h = x
    total_dense = total_kept = total_over = 0
    some_skipped = False
    for idx in ("0", "1"):
        block = net[int(idx)]
        keep, spikes = _reference_keep(block, h)
        some_skipped |= bool((~keep).any())
        lc = layers[idx]
        w = block.conv.quantized_weight().detach()
        stride = block.conv.stride[0]
        for t in range(T):
            macs, sops, out = brute_force_conv(h[t].double(), w.double(), stride, 1, keep[t])
            ref = nn.functional.conv2d(h[t].double(), w.double(), stride=stride, padding=1)
            assert torch.allclose(out, ref * keep[t], atol=1e-9)  # the loop is a real conv
            assert lc["kept_macs"][t] == macs
            assert lc["sops"][t] == sops
            assert lc["dense_macs"][t] == keep[t].numel() * w[0].numel()
            assert lc["skipped_updates"][t] == int((~keep[t]).sum())
            over = B * block.gate.overhead_macs((h.shape[3], h.shape[4]), tuple(keep.shape[3:]))
            over += keep[t].numel() if t > 0 else 0  # channel prior's mean over space
            assert lc["overhead_macs"][t] == over
            total_dense += lc["dense_macs"][t]
            total_kept += macs
            total_over += over
        h = spikes
    assert some_skipped
    # linear classifier: dense; SOPs = nonzero inputs x outputs
    fc = layers["3.module"]
    flat = h.reshape(T, B, -1)
    for t in range(T):
        assert fc["dense_macs"][t] == B * 54 * 3 == fc["kept_macs"][t]
        assert fc["sops"][t] == int((flat[t] != 0).sum()) * 3
        total_dense += fc["dense_macs"][t]
        total_kept += fc["kept_macs"][t]
    # per-sample totals and the FLOPs-reduction definition
    assert cost.samples == B and cost.T == T
    assert cost.dense_macs == pytest.approx(total_dense / B)
    assert cost.kept_macs == pytest.approx(total_kept / B)
    assert cost.overhead_macs == pytest.approx(total_over / B)
    assert cost.flops_reduction == pytest.approx(total_dense / (total_kept + total_over))


def test_conv_sops_matches_brute_force_strided():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False)
    x = (torch.rand(2, 3, 7, 7) < 0.3).float()
    keep = torch.rand(2, 5, 4, 4) < 0.5
    macs, sops, _ = brute_force_conv(x, conv.weight.detach(), 2, 1, keep)
    assert conv_sops(x, conv, keep).sum().item() == sops
    assert macs == int(keep.sum()) * 27
    _, sops_all, _ = brute_force_conv(x, conv.weight.detach(), 2, 1, torch.ones_like(keep))
    assert conv_sops(x, conv).sum().item() == sops_all


def test_energy_estimates_follow_the_presets():
    net = _tiny_net(2)
    x = (torch.rand(2, 3, 2, 6, 6) < 0.5).float()
    c = measure_cost(net, [x])
    spike = sum(sum(lc["sops"]) for lc in c.layers if lc["spike_input"]) / c.samples
    mac = sum(sum(lc["kept_macs"]) for lc in c.layers if not lc["spike_input"]) / c.samples
    e = ENERGY_PRESETS["45nm-fp32"]
    assert (e["mac_pj"], e["ac_pj"]) == (4.6, 0.9)
    assert c.energy_pj["45nm-fp32"] == pytest.approx(spike * 0.9 + (mac + c.overhead_macs) * 4.6)
    assert c.dense_energy_pj["45nm-fp32"] == pytest.approx(c.dense_macs * 4.6)
    assert set(c.energy_pj) >= {"45nm-fp32", "45nm-int8"}
    assert "ESTIMATES" in format_measured(c)
    json.dumps(c.to_dict())


def test_measured_resnet19_second_conv_dense_but_sop():
    torch.manual_seed(0)
    spec = QuantSpec(mode="spquant", weight_bits=4, prune={"init_bias": 0.0, "init_std": 3.0})
    net = ResNet19(10, 3, input_size=(16, 16), width=0.0625, spec=spec)
    x = torch.rand(2, 2, 3, 16, 16)
    c = measure_cost(net, [x])
    layers = {lc["name"]: lc for lc in c.layers}
    conv2 = layers["layers.0.conv2"]
    assert conv2["kind"] == "conv" and conv2["kept_macs"] == conv2["dense_macs"]
    assert all(s <= d for s, d in zip(conv2["sops"], conv2["dense_macs"]))
    assert layers["layers.3.shortcut.0"]["kind"] == "conv"
    assert layers["layers.0.conv1"]["kind"] == "conv-gated"
    assert not layers["stem"]["spike_input"]  # analog image into the encoder
    st = static_cost(net, (3, 16, 16))
    assert c.dense_macs == pytest.approx(st.dense_macs * 2)  # per sample over T = 2 steps
    assert c.kept_macs < c.dense_macs  # random gates switched some channels off
    assert c.flops_reduction == pytest.approx(c.dense_macs / (c.kept_macs + c.overhead_macs))


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_static_json(capsys):
    assert (
        cli_main(
            [
                "cost",
                "--model",
                "vgg9",
                "--input",
                "3x48x48",
                "--T",
                "10",
                "--wbits",
                "2",
                "--ubits",
                "1.58",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["lif_neurons"] == 921_600
    assert d["membrane_mb_paper"] == pytest.approx(0.2304) and d["membrane_mb_packed"] == pytest.approx(
        0.18432
    )
    assert d["membrane_mb_fp32"] == pytest.approx(3.6864)
    assert d["dense_macs_all_steps"] == 10 * d["dense_macs"]
    assert d["mb_definition"] == "1 MB = 10^6 bytes"


def test_cli_static_text_and_errors(capsys):
    assert (
        cli_main(["cost", "--model", "resnet19", "--wbits", "4", "--width", "0.25", "--classes", "100"]) == 0
    )
    out = capsys.readouterr().out
    assert "10^6 bytes" in out and "LIF neurons" in out
    assert cli_main(["cost", "--wbits", "32", "--ubits", "32"]) == 0
    assert "3.6864 MB" in capsys.readouterr().out
    assert cli_main(["cost", "--ubits", "1.3"]) == 2


TINY_RUN = """
name = "tiny-cost"
[model]
name = "vgg9"
plan = [4, "A", 6, "A"]
input = [8, 8]
in_channels = 1
classes = 3
T = 2
[quant]
mode = "spquant"
[data]
dataset = "synthetic"
train_subset = 16
test_subset = 24
[train]
epochs = 1
batch_size = 8
lr = 1e-2
seed = 3
[run]
log_every = 2
progress = false
tensorboard = false
threads = 1
"""


def test_measured_cost_from_run_and_cli(tmp_path, capsys):
    from spquant.report import measured_cost_from_run
    from spquant.train import load_config, load_run, train
    from spquant.train.data import load_split

    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(TINY_RUN)
    run_dir = tmp_path / "run"
    train(load_config(str(cfg_path)), run_dir)
    c = measured_cost_from_run(run_dir, batch_size=10, max_batches=2)
    assert c.samples == 20 and c.T == 2
    # the same numbers as measure_cost on the loaded model and the run's own test split
    run = load_run(run_dir)
    split = load_split(run.config, "test")
    batches = [split.batch(torch.arange(s, s + 10), 2)[0] for s in (0, 10)]
    ref = measure_cost(run.model, batches)
    assert c.kept_macs == ref.kept_macs and c.sops == ref.sops and c.flops_reduction == ref.flops_reduction
    assert (
        cli_main(["cost", "--checkpoint", str(run_dir), "--batches", "1", "--batch-size", "12", "--json"])
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["samples"] == 12 and d["flops_reduction"] > 0
    assert cli_main(["cost", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "cannot load run" in capsys.readouterr().err


def test_cost_report_and_fp32_baseline_excludes_gates():
    torch.manual_seed(0)
    sp = VGG9(4, 2, (16, 16), width=0.125, spec=QuantSpec(mode="spquant"))
    fp = VGG9(4, 2, (16, 16), width=0.125, spec=QuantSpec(mode="fp32"))
    s_sp, s_fp = static_cost(sp, (2, 16, 16)), static_cost(fp, (2, 16, 16))
    # the FP32 reference of a spquant model is the FP32 baseline of the architecture (no gates);
    # the only other difference is the learnable thresholds (one 32-bit scalar per LIF layer)
    n_lif = sum(isinstance(m, LIF) for m in sp.modules())
    assert s_sp.total_mb_fp32 == pytest.approx(s_fp.total_mb_fp32 + n_lif * 4 / MB)
    x = (torch.rand(2, 3, 2, 16, 16) < 0.4).float()
    r = cost_report(sp, (2, 16, 16), [x])
    assert r["memory_reduction"] == pytest.approx(s_sp.memory_reduction)
    assert r["flops_reduction"] > 0 and 0 <= r["skipped_update_fraction"] <= 1
    json.dumps(r)


def test_packed_weight_memory_counts_ternary_at_1_6_bits():
    from spquant.models import VGG9, QuantSpec

    model = VGG9(10, 1, (16, 16), width=0.125, spec=QuantSpec("quant"))
    c = static_cost(model, input_shape=(1, 16, 16))
    expect_bits = 0.0
    for name, p in model.named_parameters():
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        wq = getattr(mod, "weight_quant", None)
        if name.endswith("weight") and wq is not None and wq.bits == 2:
            expect_bits += p.numel() * 1.6
        elif name.endswith("weight") and wq is not None and wq.bits == 8:
            expect_bits += p.numel() * 8  # 255 levels need all 8 bits
        else:
            expect_bits += p.numel() * 32
    assert abs(c.weight_memory_mb_packed - expect_bits / 8 / 1e6) < 1e-12
    assert c.weight_memory_mb_packed < c.weight_memory_mb
    assert c.total_mb_packed == c.weight_memory_mb_packed + c.membrane_mb_packed
