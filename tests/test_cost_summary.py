"""The run summary (``model_summary``, stored in run.json) and ``membrane_bits``, checked by hand and
against the cost functions it reports, on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from spquant.cost import MB, measure_cost, membrane_bits, model_summary, static_cost
from spquant.models import VGG9, QuantSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "lb, ub, bits",
    [(-1, 1, 2), (0, 1, 1), (-2, 1, 2), (-2, 2, 3), (-8, 7, 4), (-8, 8, 5)],  # ceil(log2(levels)), >= 1
)
def test_membrane_bits_by_hand(lb, ub, bits):
    assert membrane_bits(QuantSpec(mode="quant", membrane_lb=lb, membrane_ub=ub)) == bits


def test_membrane_bits_fp32():
    assert membrane_bits(QuantSpec(mode="fp32")) == 32


class _Frames:
    """250 random binary samples [1, 6, 6]; ``batch(idx, T)`` repeats them over T steps."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        self.x = (torch.rand(250, 1, 6, 6, generator=g) < 0.5).float()

    def __len__(self):
        return len(self.x)

    def batch(self, idx, T):
        x = self.x[idx]
        return x.unsqueeze(0).expand(T, *x.shape).contiguous(), torch.zeros(len(idx))


def _config(spec):
    return SimpleNamespace(quant=spec, model=SimpleNamespace(in_channels=1, input=(6, 6), T=2))


def test_model_summary_of_a_pruned_model():
    torch.manual_seed(0)
    spec = QuantSpec(mode="spquant", first_bits=None, prune={"init_std": 3.0, "init_bias": 0.0})
    model = VGG9(3, in_channels=1, input_size=(6, 6), plan=[4], spec=spec).eval()
    data = _Frames()
    out = model_summary(model, _config(spec), data)
    assert {k: out[k] for k in ("mode", "weight_bits", "first_bits", "last_bits")} == {
        "mode": "spquant",
        "weight_bits": 2,
        "first_bits": 32,  # None = FP32 first conv
        "last_bits": 8,
    }
    assert (out["membrane_bits"], out["membrane_levels"]) == (2, 3)
    sc = static_cost(model, (1, 6, 6))
    static_keys = {
        "params": sc.params,
        "neurons": sc.lif_neurons,
        "weight_mb": sc.weight_memory_mb,
        "membrane_mb": sc.membrane_mb_paper,
        "total_mb": sc.total_mb,
        "weight_mb_packed": sc.weight_memory_mb_packed,
        "membrane_mb_packed": sc.membrane_mb_packed,
        "total_mb_packed": sc.total_mb_packed,
        "total_mb_fp32": sc.total_mb_fp32,
        "memory_reduction": sc.memory_reduction,
        "memory_reduction_packed": sc.memory_reduction_packed,
        "dense_macs_per_step": sc.dense_macs,
    }
    assert {k: out[k] for k in static_keys} == static_keys
    # by hand: 4 LIF neurons per pixel of the 6x6 map, at 2 bits (ternary, paper convention)
    assert out["neurons"] == 4 * 36 and out["membrane_mb"] == pytest.approx(4 * 36 * 2 / 8 / MB)
    # flops_batches=2: the first two batches of 100 samples, never the last 50
    mc = measure_cost(
        model, [data.batch(torch.arange(0, 100), 2)[0], data.batch(torch.arange(100, 200), 2)[0]]
    )
    assert mc.samples == 200
    measured = {
        "flops_reduction": mc.flops_reduction,
        "effective_reduction": mc.effective_reduction,
        "dense_mac_reduction": mc.dense_mac_reduction,
        "effective_op_reduction": mc.effective_op_reduction,
        "paper_convention_reduction": mc.paper_convention_reduction,
        "paper_convention_batch_sizes": [100],
        "kept_fraction": mc.kept_fraction,
        "kept_fraction_by_layer": mc.kept_fraction_by_layer,
        "skipped_update_fraction": mc.skipped_updates / (mc.membrane_updates + mc.skipped_updates),
    }
    assert {k: out[k] for k in measured} == measured  # the same counts, so the same floats
    assert 0 < out["kept_fraction"] < 1
    # the only LIF layer is the gated conv: skipped updates are the MACs not kept
    assert out["skipped_update_fraction"] == pytest.approx(1 - out["kept_fraction"], rel=1e-9)
    three = model_summary(model, _config(spec), data, flops_batches=3)
    assert three["paper_convention_batch_sizes"] == [50, 100]  # the last batch is the 50 left


def test_model_summary_fp32_and_without_data():
    spec = QuantSpec(mode="fp32")
    model = VGG9(3, in_channels=1, input_size=(6, 6), plan=[4], spec=spec).eval()
    out = model_summary(model, _config(spec), _Frames())
    assert {k: out[k] for k in ("weight_bits", "first_bits", "last_bits", "membrane_bits")} == {
        "weight_bits": 32,
        "first_bits": 32,
        "last_bits": 32,
        "membrane_bits": 32,
    }
    assert out["membrane_levels"] is None and "flops_reduction" not in out  # not pruned: nothing measured
    qspec = QuantSpec(
        mode="quant", weight_bits=4, first_bits=8, last_bits=None, membrane_lb=-2, membrane_ub=1
    )
    q = model_summary(VGG9(3, 1, (6, 6), plan=[4], spec=qspec), _config(qspec))
    assert (q["weight_bits"], q["first_bits"], q["last_bits"]) == (4, 8, 32)
    assert (q["membrane_bits"], q["membrane_levels"]) == (2, 4)
    sspec = QuantSpec(mode="spquant")
    s = model_summary(VGG9(3, 1, (6, 6), plan=[4], spec=sspec), _config(sspec))
    assert "flops_reduction" not in s  # pruned but no data given
