"""The skipping fast path (gated conv + pruned LIF computed only for what is kept) equals the
numpy reference on every named tensor, and the same interpreter with skipping disabled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy import Interpreter, fold_model
from spquant.layers import ConvBNLIF
from spquant.models import VGG9, QuantSpec

pytestmark = pytest.mark.usefixtures("one_thread")

PRIORS = {
    "none": {"channel_prior": False, "spatial_prior": False},
    "channel": {"channel_prior": True, "spatial_prior": False, "channel_prior_threshold": -0.3},
    "spatial": {"channel_prior": False, "spatial_prior": True},
    "both": {"channel_prior": True, "spatial_prior": True, "channel_prior_threshold": -0.3},
}


def _program(prior: str, gate: bool, seed: int = 0):
    torch.manual_seed(seed)
    spec = QuantSpec(mode="spquant", prune={**PRIORS[prior], "learned_gate": gate, "predictor_bits": 2})
    net = VGG9(4, in_channels=2, input_size=(8, 8), width=1.0, plan=[6, "A", 8, 8], spec=spec).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConvBNLIF):
                if m.gate is not None:  # random gates; channel 0 never kept (the union path's fill)
                    m.gate.predictor.weight.normal_(0, 1.5)
                    m.gate.predictor.bias.normal_(0, 1.0)
                    m.gate.predictor.bias[0] = -50.0
                m.bn.weight.uniform_(0.5, 3.0)
                m.bn.bias.uniform_(-1.0, 1.5)
    return fold_model(net, (2, 8, 8), input_bits=2, input_scale=1.0)


@pytest.mark.parametrize("gate", [True, False], ids=["gate", "no-gate"])
@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("path", ["union", "gather", "gather_in"])
def test_skipping_equals_reference_on_every_named_tensor(prior, gate, path):
    if prior == "none" and not gate:
        pytest.skip("nothing to skip: the layer is a plain LIF")
    program = _program(prior, gate)
    interp = Interpreter(program)
    assert interp._fused, "the gated convs must take the skipping path"
    interp.skip_paths = {c["name"]: path for c in interp._conv_of.values()}
    x = np.random.RandomState(1).randint(0, 4, size=(4, 6, 2, 8, 8))
    ref = interp.run_all(x, path="reference")
    fast = interp.run_all(x, path="fast")
    assert set(ref) == set(fast)
    for name in ref:
        assert np.array_equal(ref[name], fast[name]), name
    # the skipping path really skips: some neuron-steps of the gated layers received no current
    assert interp.last_counts.as_dict()["kept_macs"] < interp.last_counts.as_dict()["dense_macs"]
    logits = interp.run(x, path="fast")  # deferred convolutions (keep_all=False)
    interp.skipping = False
    assert np.array_equal(logits, interp.run(x, path="fast"))
    assert np.array_equal(logits, ref[program.output])


def test_calibrate_picks_an_exact_path_per_layer_and_static_input():
    program = _program("both", True, seed=3)
    interp = Interpreter(program)
    x = np.random.RandomState(2).randint(0, 4, size=(5, 2, 8, 8))  # static: the same frame every step
    choice = interp.calibrate(x, T=3, repeats=1)
    assert set(choice) == {c["name"] for c in interp._conv_of.values()}
    assert set(choice.values()) <= {"union", "gather", "gather_in"}
    ref = interp.run(x, T=3, path="reference")
    assert np.array_equal(interp.run(x, T=3, path="fast"), ref)


@pytest.mark.parametrize("path", ["union", "gather", "gather_in"])
def test_every_path_equals_reference_on_static_input(path):
    program = _program("both", True, seed=4)
    interp = Interpreter(program)
    interp.skip_paths = {c["name"]: path for c in interp._conv_of.values()}
    x = np.random.RandomState(5).randint(0, 4, size=(7, 2, 8, 8))
    ref = interp.run_all(x, T=3, path="reference")
    fast = interp.run_all(x, T=3, path="fast")
    for name in ref:
        assert np.array_equal(ref[name], fast[name]), name
