"""Folding checked per layer against a float reference, with a tolerance derived from the
fixed-point widths (not an argmax agreement rate): a wrong sign or scale in BN folding fails here."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spquant.deploy.fold import fold_model

from .helpers import synthetic_digits, tiny_model, train


def _integer_current(program, node, x_codes: np.ndarray) -> np.ndarray:
    """(acc * M + B + R) >> S, computed here in Python integers, divided back by 2^F."""
    w = program.arrays[node["weight"]].astype(np.float64)
    xt = torch.from_numpy(x_codes.astype(np.float64))
    if node["op"] == "conv":
        acc = F.conv2d(xt, torch.from_numpy(w), stride=node["stride"], padding=node["padding"]).numpy()
        shape = (1, -1, 1, 1)
    else:
        acc = xt.numpy() @ w.T
        shape = (1, -1)
    acc = acc.round().astype(np.int64)  # small integers: float64 is exact here
    M = program.arrays[node["M"]].reshape(shape)
    B = program.arrays[node["B"]].reshape(shape)
    S = node["shift"]
    R = (1 << (S - 1)) if S > 0 else 0
    cur = (acc * M + B + R) >> S
    return cur / 2.0**program.frac_bits, np.abs(acc)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = tiny_model()
    x, y = synthetic_digits(256)
    train(model, x, y, steps=4)
    g = torch.Generator().manual_seed(1)
    for block in (model.features[0], model.features[2]):
        bn = block.bn
        with torch.no_grad():  # BN far from identity, with both signs of gamma and beta
            n = bn.num_features
            bn.weight.copy_(
                (torch.rand(n, generator=g) + 0.5) * torch.where(torch.rand(n, generator=g) < 0.3, -1, 1)
            )
            bn.bias.copy_(torch.randn(n, generator=g) * 0.7)
            bn.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    return model.eval()


def _check(got, want, acc_abs, program, node):
    # error budget: M and B rounded to 1/2 unit at 2^(F+S), the final shift rounds to 1/2 at 2^F
    unit = 2.0 ** -(program.frac_bits + node["shift"])
    bound = 0.5 * unit * (acc_abs + 1) + 0.5 * 2.0**-program.frac_bits + 1e-9
    assert np.all(np.abs(got - want) <= bound), float(np.max(np.abs(got - want) - bound))


def test_first_conv_bn_fold_matches_float(trained):
    program = fold_model(trained, (1, 28, 28))
    node = next(n for n in program.nodes if n["op"] == "conv")
    codes = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28))
    block = trained.features[0]
    with torch.no_grad():
        want = block.bn(block.conv(torch.from_numpy(codes).float().double().float() / 255)).double().numpy()
    got, acc = _integer_current(program, node, codes)
    _check(got, want, acc, program, node)


def test_second_conv_after_pool_and_classifier_match_float(trained):
    program = fold_model(trained, (1, 28, 28))
    convs = [n for n in program.nodes if n["op"] == "conv"]
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, (3, 8, 14, 14))  # a 2x2 sum pool of spikes: 0..4, scale 1/4
    block = trained.features[2]
    with torch.no_grad():
        want = block.bn(block.conv(torch.from_numpy(counts).float() / 4)).double().numpy()
    got, acc = _integer_current(program, convs[1], counts)
    _check(got, want, acc, program, convs[1])

    fc = next(n for n in program.nodes if n["op"] == "linear")
    flat = rng.integers(0, 5, (3, 784))
    with torch.no_grad():
        want = trained.classifier(torch.from_numpy(flat).float() / 4).double().numpy()
    got, acc = _integer_current(program, fc, flat)
    _check(got, want, acc, program, fc)
