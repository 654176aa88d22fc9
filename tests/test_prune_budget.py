"""The budgeted gate: top-k target, budget gap, open-gate warm-up, floors, and that training with
``keep`` drives the kept fraction to the target."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from spquant.models import VGG9, QuantSpec
from spquant.prune import (
    ChannelGate,
    budget_gap,
    channel_importance,
    collect_prune_stats,
    gate_loss,
    set_training_progress,
    topk_target,
    validate_prune_options,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_topk_target_keeps_exactly_k_per_row_and_at_least_one():
    torch.manual_seed(0)
    imp = torch.rand(3, 5, 16)
    for keep, k in ((0.5, 8), (0.25, 4), (1.0, 16), (0.01, 1)):
        t = topk_target(imp, keep)
        assert torch.equal(t.sum(-1), torch.full((3, 5), float(k)))
        # every kept entry is at least as important as every dropped one
        kept_min = torch.where(t > 0, imp, torch.inf).amin(-1)
        dropped_max = torch.where(t > 0, -torch.inf, imp).amax(-1)
        assert bool((kept_min >= dropped_max).all())


def test_channel_importance_signals_by_hand():
    cur = torch.tensor([[[[[1.0, -3.0]], [[0.5, 0.5]]]]])  # T=1, B=1, C=2, H=1, W=2
    assert channel_importance(cur, "max_abs").flatten().tolist() == [3.0, 0.5]
    assert channel_importance(cur, "l1").flatten().tolist() == [2.0, 0.5]
    assert channel_importance(cur, "pos_l1").flatten().tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown importance"):
        channel_importance(cur, "nope")


def test_budget_gap_value_is_hard_fraction_gradient_reaches_probabilities():
    p = torch.tensor([0.9, 0.8, 0.6, 0.2], requires_grad=True)
    g = (p >= 0.5).float()
    gap = budget_gap(p, g, 0.5)
    assert gap.item() == pytest.approx((0.75 - 0.5) ** 2)
    gap.backward()
    assert torch.allclose(p.grad, torch.full((4,), 2 * 0.25 / 4))


def test_budget_options_validated():
    assert validate_prune_options({})["keep"] == 1.0
    for bad in (
        {"keep": 0.0},
        {"keep": 1.5},
        {"gate_target": "topk"},
        {"importance": "spikes"},
        {"warmup": 1.0},
        {"min_keep": -0.1},
        {"budget_weight": -1.0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            validate_prune_options(bad)
    g = ChannelGate(4, 8, {"keep": 0.25, "min_keep": 0.4})
    assert g.target_kind == "budget" and g.layer_keep == 0.4
    assert ChannelGate(4, 8, {}).target_kind == "mass"
    assert ChannelGate(4, 8, {"keep": 0.5, "gate_target": "mass"}).target_kind == "mass"


def test_open_gate_warmup_holds_gates_open_in_training_only():
    torch.manual_seed(0)
    g = ChannelGate(4, 8, {"keep": 0.5, "warmup": 0.3, "init_bias": -3.0})  # predictor says: all off
    x = (torch.rand(2, 3, 4, 5, 5) < 0.5).float()
    cur = torch.randn(2, 3, 8, 5, 5)
    g.train()
    set_training_progress(g, 0.1)
    assert torch.equal(g(x, cur), torch.ones(2, 3, 8, 1, 1))
    assert g.last_loss is not None and g.last_loss.requires_grad  # the predictor still learns
    set_training_progress(g, 0.5)
    assert g(x, cur).sum() == 0
    g.eval()
    set_training_progress(g, 0.0)
    assert g(x, cur).sum() == 0


def test_budget_loss_drives_kept_fraction_to_target():
    """Train a small spiking VGG with task + gate loss; the measured fraction of dense MACs the gates
    keep (eval mode, new data; every channel of a layer costs the same MACs) ends within 0.1 of
    ``keep`` over the gated layers, from ~1.0, and every layer moves at least half way to it."""
    keep = 0.3
    torch.manual_seed(0)
    spec = QuantSpec(
        mode="spquant", prune={"keep": keep, "warmup": 0.2, "channel_prior": False, "spatial_prior": False}
    )
    net = VGG9(4, in_channels=2, input_size=(16, 16), width=1.0, plan=[16, "A", 32, "A"], spec=spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    protos = (torch.rand(4, 2, 16, 16) < 0.3).float()

    def batch(n=16):
        y = torch.randint(0, 4, (n,))
        x = (torch.rand(3, n, 2, 16, 16) < 0.1 + 0.6 * protos[y]).float()
        return x, y

    def kept():
        stats = collect_prune_stats(net, [batch(64)[0]])
        return {k: v["mean_active_channel_fraction"] for k, v in stats.items()}

    # dense MACs per sample and step of the two gated convs: C_out * H * W * C_in * 9
    macs = {"features.0": 16 * 16 * 16 * 2 * 9, "features.2": 32 * 8 * 8 * 16 * 9}

    before = kept()
    assert min(before.values()) > 0.9
    steps = 200
    for step in range(steps):
        set_training_progress(net, step / steps)
        net.train()
        x, y = batch()
        loss = F.cross_entropy(net(x).mean(0), y) + gate_loss(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = kept()
    print(f"keep {keep}: kept fraction per layer {before} -> {after}")
    assert set(after) == set(macs)
    overall = sum(after[k] * macs[k] for k in macs) / sum(macs.values())
    assert abs(overall - keep) <= 0.1, (overall, after)
    for name, frac in after.items():
        assert abs(frac - keep) <= 0.5 * (1.0 - keep), (name, frac)
