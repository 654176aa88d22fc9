"""Folding rules pinned by hand-computed values and by the refusal conditions: the shift choice of the
fixed-point epilogue, the gate tables, the prior's integer bound, the detector path and the layers
that must be refused (or accepted). Every expected number is worked out here, not by the folder."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from spquant.deploy.fold import _Folder, fold_model
from spquant.deploy.program import DeployError
from spquant.models import VGG9, QuantSpec
from spquant.models.yolo import SpikingYOLO
from spquant.prune.prior import MembranePrior

from .helpers import tiny_model


def _vgg16():
    return tiny_model(size=16).eval()


def test_default_frac_bits_and_its_bounds():
    assert fold_model(_vgg16(), (1, 16, 16)).frac_bits == 16
    assert fold_model(_vgg16(), (1, 16, 16), frac_bits=30).frac_bits == 30
    assert fold_model(_vgg16(), (1, 16, 16), frac_bits=2).frac_bits == 2
    with pytest.raises(DeployError, match="2..30"):
        fold_model(_vgg16(), (1, 16, 16), frac_bits=31)


def test_every_threshold_is_an_integer_array():
    program = fold_model(_vgg16(), (1, 16, 16))
    lifs = [n for n in program.nodes if n["op"].startswith("lif")]
    assert lifs and all(np.issubdtype(program.arrays[n["V"]].dtype, np.integer) for n in lifs)


def test_avgpool_with_tuple_padding_is_accepted_and_unknown_layers_are_named():
    model = _vgg16()
    model.features[1].module.padding = (0, 0)  # the same pooling as padding=0
    assert [n["op"] for n in fold_model(model, (1, 16, 16)).nodes].count("sumpool") == 2
    model.features[1].module = nn.AvgPool2d((2, 4), stride=(2, 4))  # a rectangle, not a 2 x 2 sum
    with pytest.raises(DeployError, match="non-overlapping unpadded average pooling"):
        fold_model(model, (1, 16, 16))
    model.features[1].module = nn.AvgPool2d(2, stride=1)  # overlapping windows
    with pytest.raises(DeployError, match="non-overlapping unpadded average pooling"):
        fold_model(model, (1, 16, 16))
    model.features[1] = nn.Identity()
    with pytest.raises(DeployError, match="Identity"):
        fold_model(model, (1, 16, 16))


@pytest.mark.parametrize(
    "attr, value",
    [("groups", 2), ("kernel_size", (3, 1)), ("dilation", (2, 2)), ("padding", (1, 0))],
    ids=str,
)
def test_conv_refusals(attr, value):
    model = _vgg16()
    setattr(model.features[2].conv, attr, value)
    with pytest.raises(DeployError, match="square, ungrouped, undilated"):
        fold_model(model, (1, 16, 16))


# ---- the fixed-point epilogue's shift, by hand ------------------------------------------------------
class _Quant:
    bits, max_code = 8, 127

    def __init__(self, codes, s_w):
        self.codes, self.s_w = codes, s_w

    def to_int(self, weight):
        return self.codes, self.s_w


def _linear_node(codes, bias, input_max=1, bits=8):
    """One linear layer with integer weight codes and weight scale 2^-4 after an input of scale 1."""
    codes = torch.tensor(codes, dtype=torch.int64)
    layer = SimpleNamespace(
        weight=codes.float(),
        weight_quant=_Quant(codes, 2.0**-4),
        bias=None if bias is None else torch.tensor(bias, dtype=torch.float32),
    )
    layer.weight_quant.bits = bits
    f = _Folder(16, (codes.shape[1],), 8, 1.0, input_max)
    name = f.linear("input", layer)
    node = f.program.nodes[-1]
    assert f.program.arrays[name + ".weight"].tolist() == codes.tolist()  # stored without overflow
    return node, f.program.arrays[name + ".M"], f.program.arrays[name + ".B"]


def test_shift_prefers_the_float32_exact_path():
    # mult = 2^-4, F = 16: peak 2^12, so the 16-bit shift is S0 = 15 - 12 = 3 (M = 2^15).
    # acc_max = 10 * 100 * 1 = 1000. Budget acc*M + B + 2^s < 2^23 = 8,388,608 with B = 0.5 * 2^(16+s):
    #   s = 3: 1000 * 32768 > budget;  s = 2: 1000 * 16384 > budget;
    #   s = 1: 1000 * 8192 + 65536 + 2 = 8,257,538 < budget  -> S = 1, M = 8192, B = 65536.
    node, M, B = _linear_node([[100] * 10], [0.5])
    assert node["shift"] == 1 and M.tolist() == [8192] and B.tolist() == [65536]


def test_shift_keeps_the_16_bit_multiplier_when_no_float32_shift_fits():
    # acc_max = 100 * 100 = 10,000: even M = 2^(16-4+0) = 4096 gives 4.1e7 > 2^23, so S = S0 = 3.
    node, M, B = _linear_node([[100] * 100], None)
    assert node["shift"] == 3 and M.tolist() == [32768] and B.tolist() == [0]


def test_nine_bit_codes_are_stored_without_overflow():
    node, M, B = _linear_node([[200, -255]], None, bits=9)
    assert node["bits"] == 9


def test_fold_refuses_other_models_and_a_zero_leak():
    with pytest.raises(DeployError, match="VGG9, ResNet19 and SpikingYOLO, got Linear"):
        fold_model(nn.Linear(2, 2).eval(), (1, 2, 2))
    model = _vgg16()
    model.features[0].neuron.tau = 0.0
    with pytest.raises(DeployError, match="power of two"):
        fold_model(model, (1, 16, 16))


def test_resnet_second_conv_folds_its_batchnorm():
    model = tiny_model("resnet", size=8).eval()
    with torch.no_grad():
        for blk in model.layers:
            blk.bn2.bias.fill_(0.5)  # running mean 0: the folded bias is exactly 0.5
    program = fold_model(model, (1, 8, 8))
    adds = [n for n in program.nodes if n["op"] == "add"]
    assert adds
    for add in adds:
        c2 = next(n for n in program.nodes if n["name"] == add["inputs"][0])
        B = program.arrays[c2["B"]] / 2.0 ** (program.frac_bits + c2["shift"])
        assert np.all(np.abs(B - 0.5) <= 2.0 ** -(program.frac_bits + c2["shift"]))


# ---- the learned gate and the channel prior ---------------------------------------------------------
def _gated_vgg(**prune):
    torch.manual_seed(0)
    opt = {"learned_gate": True, "channel_prior": True, "spatial_prior": False, "predictor_bits": 2}
    spec = QuantSpec(mode="spquant", prune={**opt, **prune})
    net = VGG9(4, in_channels=2, input_size=(8, 8), width=1.0, plan=[6, "A", 8], spec=spec).eval()
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "predictor", None) is not None:
                m.predictor.weight.normal_(0, 1.5)
                m.predictor.bias.normal_(0, 1.0)
    return net, fold_model(net, (2, 8, 8), input_bits=1, input_scale=1.0)


def test_gate_tables_and_matrix_by_hand():
    net, program = _gated_vgg(binarize_at=0.7, channel_prior_threshold=-0.5)
    gate = net.features[0].gate
    node = next(n for n in program.nodes if n["op"] == "channel_gate")
    assert node["inputs"] == ["input"]
    # the first gate sees the {0, 1} input: 8 x 8 pixels, so the pooled sums d lie in 0..D = 64
    D, hw = 64, 64
    kb = node["lo_bits"]
    assert 4**kb >= D + 1 > 4 ** (kb - 1)  # the smallest split with 2^kb * 2^kb > D (kb = 4)
    lo = program.arrays[node["exp_lo"]].astype(np.float64)
    hi = program.arrays[node["exp_hi"]].astype(np.float64)
    fe = node["exp_frac_bits"]
    beta = 1.0 / (hw * gate.temperature)
    assert len(lo) == 2**kb and (len(hi) - 1) << kb <= D < len(hi) << kb
    assert np.all(np.abs(lo / 2**fe - np.exp(-beta * np.arange(2**kb))) <= 2.0 ** -(fe + 1))
    assert np.all(np.abs(hi / 2**fe - np.exp(-beta * np.arange(len(hi)) * 2**kb)) <= 2.0 ** -(fe + 1))
    d = np.arange(D + 1)
    prod = hi[d >> kb] * lo[d & (2**kb - 1)] / 2.0 ** (2 * fe)
    assert np.all(np.abs(prod - np.exp(-beta * d)) <= 2.0 ** -(fe - 1))
    # A = kappa W + b - logit(0.7) in 16 fraction bits; kappa = C_in with input scaling
    W = gate.predictor_quant(gate.predictor.weight.detach()).double().reshape(gate.c_out, -1).numpy()
    kappa = 2.0 if gate.input_scale else 1.0
    want = kappa * W + gate.predictor.bias.detach().double().numpy()[:, None] - math.log(0.7 / 0.3)
    A = program.arrays[node["A"]] / 2.0**16
    assert np.all(np.abs(A - want) <= 2.0**-17 + 1e-12)
    # the neuron after the gate reads it; its channel prior keeps iff sum / HW >= -0.5 exactly
    lif = next(n for n in program.nodes if n["op"] == "lif_pruned")
    assert lif["inputs"][1] == node["name"] and lif["prior_channel"] == 1
    assert lif["prior_channel_min"] == -hw // 2  # lb = -1, so -32 is in range and -32 / 64 == -0.5


def test_channel_prior_above_the_membrane_range_never_keeps():
    _, program = _gated_vgg(channel_prior_threshold=1.5)  # ub = 1: no channel mean reaches 1.5
    lif = next(n for n in program.nodes if n["op"] == "lif_pruned")
    assert lif["prior_channel"] == 1 and lif["prior_channel_min"] == 1 * 64 + 1


def test_channel_prior_is_not_applied_to_a_linear_layer():
    # the prior keeps channels by their spatial mean, which a [T, B, F] membrane does not have: in
    # PyTorch it keeps everything there, so the fold must not turn it into a channel bound
    model = tiny_model("resnet", size=8).eval()
    prior = MembranePrior(channel=True, spatial=False, channel_threshold=0.5)
    assert prior.keep_mask(torch.full((2, 16), -1.0), None) is None  # no mask: all kept
    model.fc1_neuron.prior = prior
    program = fold_model(model, (1, 8, 8))
    fc1 = next(n for n in program.nodes if n["op"] == "linear" and not n["name"].startswith("logits"))
    lif = next(n for n in program.nodes if n["inputs"][0] == fc1["name"])
    assert lif["op"] == "lif_pruned" and lif["prior_channel"] == 0


# ---- the detector path ------------------------------------------------------------------------------
def _yolo():
    torch.manual_seed(0)
    spec = QuantSpec(mode="quant")
    return SpikingYOLO(2, in_channels=2, input_size=(16, 16), spec=spec, plan=(4, "M", 4)).eval()


def test_detector_fold_keeps_pooling_spec_and_anchors():
    model = _yolo()
    program = fold_model(model, (2, 16, 16), input_bits=1, input_scale=1.0)
    ops = [n["op"] for n in program.nodes]
    assert ops == ["conv", "lif", "maxpool", "conv", "lif", "conv"]
    assert program.nodes[2]["kernel"] == 2
    assert program.meta["spec"] == model.spec.to_dict() and program.meta["spec"]["mode"] == "quant"
    det = program.meta["detection"]
    assert det["anchors"] == [[float(v) for v in a] for a in model.anchors.tolist()]
    assert det["num_classes"] == 2 and det["grid"] == [8, 8] and det["input_size"] == [16, 16]
    assert program.meta["model"] == "SpikingYOLO"


def test_maxpool_written_with_tuples_is_accepted():
    model = _yolo()
    model.features[1].module = nn.MaxPool2d((2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1))
    program = fold_model(model, (2, 16, 16), input_bits=1, input_scale=1.0)
    assert program.nodes[2]["op"] == "maxpool" and program.nodes[2]["kernel"] == 2


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(2, stride=1),
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, dilation=2),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d((2, 4), stride=(2, 4)),
    ],
    ids=["overlapping", "padded", "dilated", "ceil", "rectangle"],
)
def test_maxpool_refusals(pool):
    model = _yolo()
    model.features[1].module = pool
    with pytest.raises(DeployError, match="non-overlapping unpadded max pooling"):
        fold_model(model, (2, 16, 16), input_bits=1, input_scale=1.0)


def _pruned_vgg(size, plan, spec_kw=None, **prune):
    torch.manual_seed(0)
    opt = {"learned_gate": False, "channel_prior": False, "spatial_prior": False, **prune}
    spec = QuantSpec(mode="spquant", prune=opt, **(spec_kw or {}))
    net = VGG9(4, in_channels=2, input_size=(size, size), width=1.0, plan=plan, spec=spec).eval()
    return fold_model(net, (2, size, size), input_bits=1, input_scale=1.0)


def test_channel_prior_on_a_one_pixel_map():
    # 2 x 2 input, pool -> 1 x 1: the channel mean is the single membrane value, sums in lb..ub = -1..1
    program = _pruned_vgg(2, [6, "A", 8], channel_prior=True, channel_prior_threshold=-0.5)
    lif = [n for n in program.nodes if n["op"] == "lif_pruned"][-1]
    assert lif["prior_channel"] == 1 and lif["prior_channel_min"] == 0  # smallest s in -1..1 with s >= -0.5


def test_spatial_prior_level_defaults_to_the_membrane_lower_bound():
    program = _pruned_vgg(4, [6], spec_kw={"membrane_lb": -2}, spatial_prior=True)
    lif = next(n for n in program.nodes if n["op"] == "lif_pruned")
    assert lif["lb"] == -2 and lif["prior_spatial"] == 1 and lif["prior_spatial_level"] == -2


def test_a_vanishing_multiplier_caps_the_shift_so_the_bias_still_fits_int64():
    """BN weight 1e-9 asks for a shift past 40; capped at 40, a BN bias of 40 becomes
    B = 40 * 2^(16 + 40) < 2^62 and the layer folds (one more bit of shift would overflow)."""
    from spquant.deploy import Interpreter

    torch.manual_seed(0)
    net = VGG9(4, in_channels=1, input_size=(8, 8), width=1.0, plan=[4, "A"], spec=QuantSpec(mode="quant"))
    with torch.no_grad():
        bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
        bn.weight.fill_(1e-9)
        bn.bias.fill_(40.0)
        bn.running_var.fill_(1.0)
        bn.running_mean.zero_()
    program = fold_model(net.eval(), (1, 8, 8))
    conv = program.nodes[0]
    assert conv["op"] == "conv" and conv["shift"] == 40
    B = program.arrays[conv["B"]]
    assert np.all(B == 40 * 2**56)  # the bias exactly, in fixed point: 40 * 2^(F + S)
    x = np.random.RandomState(0).randint(0, 256, size=(2, 1, 8, 8))
    cur = Interpreter(program).run_all(x, T=2, path="reference")[conv["output"]]
    assert np.all(np.abs(cur - 40 * 2**16) <= 2)  # ~40.0 in fixed point: the weights barely count
