"""Every model the integer form cannot represent is refused with a DeployError that says why."""

import copy

import numpy as np
import pytest
import torch

from spquant.deploy.fold import fold_model
from spquant.deploy.program import DeployError, analyze
from spquant.models import VGG9, QuantSpec

from .helpers import tiny_model


def _vgg(**spec_kw):
    return VGG9(10, in_channels=1, input_size=16, spec=QuantSpec(**spec_kw), plan=(4, "A", 8, "A"))


def test_fp32_model_refused():
    with pytest.raises(DeployError, match=r"IdentityWeight \(FP32\) has no integer codes"):
        fold_model(_vgg(mode="fp32").eval(), (1, 16, 16))
    model = _vgg(mode="quant").eval()  # quantized weights but a float membrane
    for m in model.modules():
        if hasattr(m, "membrane"):
            m.membrane = None
    with pytest.raises(DeployError, match="FP32 membrane"):
        fold_model(model, (1, 16, 16))


def test_training_mode_refused():
    with pytest.raises(DeployError, match="eval mode"):
        fold_model(_vgg(mode="quant").train(), (1, 16, 16))


def test_spatial_gate_refused():
    model = _vgg(mode="spquant", prune={"spatial_gate": True}).eval()
    with pytest.raises(DeployError, match="spatial block gate"):
        fold_model(model, (1, 16, 16))


def test_non_power_of_two_leak_refused():
    model = _vgg(mode="quant").eval()
    for m in model.modules():
        if hasattr(m, "tau"):
            m.tau = 0.3
    with pytest.raises(DeployError, match=r"tau=0.3 is not a power of two"):
        fold_model(model, (1, 16, 16))


def test_bad_frac_bits_refused():
    with pytest.raises(DeployError, match="frac_bits must be in 2..30"):
        fold_model(_vgg(mode="quant").eval(), (1, 16, 16), frac_bits=40)


def test_bound_overflow_refused():
    torch.manual_seed(0)
    program = fold_model(tiny_model().eval(), (1, 28, 28))
    analyze(program)  # the real program passes
    bad = copy.deepcopy(program)
    conv = next(n for n in bad.nodes if n["op"] == "conv")
    bad.arrays[conv["M"]] = np.full_like(bad.arrays[conv["M"]], 2**60)
    with pytest.raises(DeployError, match="overflows int64"):
        analyze(bad)
    bad = copy.deepcopy(program)
    lif = next(n for n in bad.nodes if n["op"] in ("lif", "lif_pruned"))
    bad.nodes[bad.nodes.index(lif)]["inputs"] = ["nowhere"]
    with pytest.raises(DeployError, match="unknown input 'nowhere'"):
        analyze(bad)
