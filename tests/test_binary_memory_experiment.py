"""experiments/binary_memory.py: the students start from the parent with the bits they claim, and
the limits of the ratio are computed from the deployed counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import binary_memory  # noqa: E402

from spquant.train import load_config  # noqa: E402


@pytest.mark.parametrize("name, hidden, last", [("binary", 1, 1), ("ternary", 2, 8)])
def test_students_start_from_the_parent_with_their_bits(name, hidden, last):
    sets = binary_memory.overrides("runs/fp32", binary_memory.STUDENTS[name][1], None)
    cfg = load_config("mnist-dvs:quant", sets)
    q, t = cfg.quant, cfg.train
    assert (q.weight_bits, q.first_bits, q.last_bits) == (hidden, 8, last)
    assert t.init_from == t.distill_teacher == "runs/fp32"
    assert q.weight_scale == "lsq-channel" and t.distill_weight == 0.5 and t.lr == 5e-4 and t.epochs == 1
    # the parent's budget: the RESULTS.md network on 15,000 images of full MNIST as events
    assert cfg.model.width == 0.125 and cfg.model.T == 4 and cfg.data.train_subset == 15000
    assert cfg.data.source == "full"


def test_limits_from_the_deployed_counts():
    # 800 weights (the first conv's 16 at 8 bits = 16 B, 784 at 1 bit = 98 B) and 1,000 membrane
    # neurons (200 B at 1.6 bits)
    m = {
        "deployed": {
            "by_kind": {"weights": 114.0, "membrane": 200.0},
            "fixed_point_bytes": 100.0,
            "total_bytes": 400.0,  # rounded: the shares below divide by it,
            "fp32_bytes": 8000.0,
        },
        "weights": 800,
        "first_weights": 16,
    }
    lim = binary_memory.limits(m)
    assert lim["share_weights"] == 114 / 400 and lim["share_fixed"] == 0.25 and lim["share_membrane"] == 0.5
    assert lim["no_fixed"] == pytest.approx(8000 / 314)
    assert lim["all_1bit_no_fixed"] == pytest.approx(8000 / 300)  # 800 weights at 1 bit = 100 B
    assert lim["weights_alone"] == pytest.approx(3200 / 114)
    assert lim["membrane_alone"] == pytest.approx(20.0)
