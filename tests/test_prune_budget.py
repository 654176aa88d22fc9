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


def test_budget_gate_predictors_train_at_their_own_lr_without_decay():
    """Each budget gate's predictor weight and bias sit in one optimizer group at train.lr x
    predictor_lr_scale with no weight decay; every other parameter is in exactly one group, and
    mass-target gates stay with the network's weights (the method's unscaled predictor)."""
    from types import SimpleNamespace

    from spquant.prune import gate_modules
    from spquant.train.loop import build_optimizer

    t = SimpleNamespace(lr=2e-3, weight_decay=1e-4, threshold_lr=None, optimizer="adam", momentum=0.0)
    plan = [8, "A", 16]
    for prune, scale in (({"keep": 0.5, "predictor_lr_scale": 7.0}, 7.0), ({}, None)):
        net = VGG9(
            4, in_channels=2, input_size=(8, 8), width=1.0, plan=plan, spec=QuantSpec("spquant", prune=prune)
        )
        opt = build_optimizer(net, t)
        groups = {g["name"]: g for g in opt.param_groups}
        seen = [id(p) for g in opt.param_groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in net.parameters() if p.requires_grad)
        predictor_ids = {id(p) for g in gate_modules(net) for p in g.predictor.parameters()}
        assert len(predictor_ids) == 2 * len(gate_modules(net)) > 0
        if scale is None:
            assert not any(name.startswith("gates") for name in groups)
            assert predictor_ids <= {id(p) for p in groups["weights"]["params"]}
        else:
            (gates,) = [g for name, g in groups.items() if name.startswith("gates")]
            assert {id(p) for p in gates["params"]} == predictor_ids
            assert gates["lr"] == pytest.approx(2e-3 * 7.0) and gates["weight_decay"] == 0.0
            assert gates["base_lr"] == gates["lr"]


def test_every_prune_option_is_in_the_docs_table_with_its_default():
    import re
    from pathlib import Path

    from spquant.prune import PRUNE_DEFAULTS

    text = (Path(__file__).resolve().parents[1] / "docs" / "pruning_and_cost.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, flags=re.M))
    assert set(PRUNE_DEFAULTS) <= set(table), sorted(set(PRUNE_DEFAULTS) - set(table))
    for key, default in PRUNE_DEFAULTS.items():
        assert table[key].strip() == str(default), (key, table[key], default)
