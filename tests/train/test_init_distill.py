"""--init-from (exact FP32 load, BN recalibration, thresholds, opened gates) and distillation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from spquant.cli import main
from spquant.train.checkpoint import load_model_file
from spquant.train.config import load_config
from spquant.train.init_from import InitFromError, init_from_run, recalibrate_bn
from spquant.train.loss import distill_loss, tet_loss


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    from tests.train.conftest import TINY

    d = tmp_path_factory.mktemp("fp32")
    cfg = d / "tiny.toml"
    cfg.write_text(TINY.format(mode="fp32", every=0))
    out = d / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


@pytest.mark.parametrize(
    "overrides",
    [
        ["quant.mode=quant"],
        ["quant.mode=quant", 'quant.weight_scale="lsq-channel"', 'quant.learn_threshold="channel"'],
        ["quant.mode=spquant", "quant.weight_bits=1", 'quant.weight_scale="lsq-layer"'],
    ],
)
def test_init_from_loads_the_fp32_weights_exactly(fp32_run, overrides):
    cfg_path, run = fp32_run
    fp32, _ = load_model_file(run / "model.safetensors")
    cfg = load_config(str(cfg_path), overrides)
    torch.manual_seed(123)
    model = cfg.build_model()
    summary = init_from_run(model, cfg, run, calib_batches=())  # no recalibration: everything as saved
    state = model.state_dict()
    for key, value in fp32.items():
        name = key.removeprefix("model.")
        if name.endswith("threshold") and state[name].shape != value.shape:
            assert torch.equal(state[name], value.expand_as(state[name]))
        else:
            assert torch.equal(state[name], value), name
    assert summary["copied"] + summary["thresholds_broadcast"] == len(fp32)
    if cfg.quant.weight_scale != "stat":
        assert summary["learned_steps_initialised"] == 2  # the conv and the classifier
    if cfg.quant.pruned:
        assert summary["gates_opened"] == 1
        gate = next(m for m in model.modules() if type(m).__name__ == "ChannelGate")
        assert float(gate.predictor.bias.detach().min()) >= 3.0


def test_bn_recalibration_is_the_plain_mean(fp32_run):
    cfg_path, run = fp32_run
    cfg = load_config(str(cfg_path), ["quant.mode=quant"])
    model = cfg.build_model()
    torch.manual_seed(0)
    batches = [torch.rand(2, 8, 1, 8, 8) for _ in range(3)]
    recalibrate_bn(model, batches)
    bn = model.features[0].bn
    with torch.no_grad():
        conv = model.features[0].conv
        means = [conv(x.reshape(16, 1, 8, 8)).mean((0, 2, 3)) for x in batches]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert bn.momentum == 0.1  # restored


def test_init_from_rejects_another_network(fp32_run, tmp_path, capsys):
    cfg_path, run = fp32_run
    cfg = load_config(str(cfg_path), ["quant.mode=quant", 'model.plan=[6, "A"]'])
    with pytest.raises(InitFromError, match="model.plan"):
        init_from_run(cfg.build_model(), cfg, run)
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg_path),
                "--set",
                "quant.mode=quant",
                "--out",
                str(tmp_path / "q"),
                "--init-from",
                str(tmp_path / "nothing"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "no model.safetensors" in capsys.readouterr().err


def test_cli_init_from_and_distill_end_to_end(fp32_run, tmp_path, capsys):
    cfg_path, run = fp32_run
    out = tmp_path / "q"
    args = [
        "train",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--no-progress",
        "--init-from",
        str(run),
        "--set",
        "quant.mode=quant",
        "--set",
        f"train.distill_teacher={json.dumps(str(run))}",
        "--set",
        "train.distill_weight=0.7",
        "--set",
        "train.distill_temperature=2.0",
        "--set",
        "train.max_steps=2",
    ]
    assert main(args) == 0
    capsys.readouterr()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    init = [r for r in recs if r["kind"] == "init_from"]
    assert init and init[0]["bn_calibration_batches"] == 6  # 48 images / batch 8, fewer than 20
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["init_from"] == str(run) and saved["distill_weight"] == 0.7
    # the trained quantized run's memory as deployed, through spquant cost
    assert main(["cost", "--checkpoint", str(out), "--batches", "1", "--json"]) == 0
    deployed = json.loads(capsys.readouterr().out)["deployed"]
    assert deployed["by_kind"]["weights"] > 0 and deployed["reduction"] > 1


def test_distill_loss_matches_a_hand_computation():
    # T=2, B=1, K=2 with numbers small enough to do by hand
    o = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    z = torch.tensor([[[0.0, 2.0]], [[2.0, 0.0]]])
    tau = 2.0

    def sm(a, b):
        e = [math.exp(a / tau), math.exp(b / tau)]
        return [v / sum(e) for v in e]

    total = 0.0
    for (o0, o1), (z0, z1) in [((1.0, 0.0), (0.0, 2.0)), ((0.0, 0.0), (2.0, 0.0))]:
        p, q = sm(o0, o1), sm(z0, z1)
        total += sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    want = tau**2 * total / 2
    assert math.isclose(float(distill_loss(o, z, tau)), want, rel_tol=1e-6)
    # a teacher with another T: its mean over time is the target at every step
    z1 = z.mean(0, keepdim=True)
    assert math.isclose(
        float(distill_loss(o, z1, tau)), float(distill_loss(o, z1.expand(2, 1, 2), tau)), rel_tol=1e-6
    )
    # combined with TET: (1 - w) TET + w KD, as the training loop computes it
    y = torch.tensor([0])
    w = 0.3
    ce = (F.cross_entropy(o[0], y) + F.cross_entropy(o[1], y)) / 2
    mse = ((o - 1.0) ** 2).mean()
    tet = 0.95 * ce + 0.05 * mse
    assert math.isclose(float(tet_loss(o, y, 0.05, 1.0)), float(tet), rel_tol=1e-6)
    combined = (1 - w) * tet_loss(o, y, 0.05, 1.0) + w * distill_loss(o, z, tau)
    assert math.isclose(float(combined), (1 - w) * float(tet) + w * want, rel_tol=1e-6)
    # gradient flows to the student only
    o.requires_grad_()
    zz = z.clone().requires_grad_()
    distill_loss(o, zz, tau).backward()
    assert o.grad is not None and zz.grad is None
