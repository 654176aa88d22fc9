import json
import os

import pytest
import torch

from spquant.models import VGG9, QuantSpec
from spquant.train import checkpoint as ck
from spquant.train.config import TrainConfig
from spquant.train.loop import build_optimizer


def _model(mode="quant", width=8):
    torch.manual_seed(0)
    return VGG9(3, 1, (8, 8), spec=QuantSpec(mode=mode, learn_threshold="layer"), plan=(width, "A"))


def _step(net, opt):
    opt.zero_grad()
    out = net(torch.rand(2, 4, 1, 8, 8))
    out.sum().backward()
    opt.step()


def test_round_trip_model_optimizer_rng(tmp_path):
    net = _model()
    opt = build_optimizer(net, TrainConfig(threshold_lr=0.1))
    assert [g["name"] for g in opt.param_groups] == ["weights", "thresholds"] and opt.param_groups[1][
        "lr"
    ] == 0.1
    _step(net, opt)
    rng = torch.get_rng_state()
    p = ck.save_checkpoint(
        tmp_path, 7, net, opt, {"epoch": 0, "step_in_epoch": 7, "global_step": 7}, {"name": "x"}, {"acc": 0.5}
    )
    assert (
        p.name == "step-00000007.json" and (tmp_path / "checkpoints" / "step-00000007.safetensors").is_file()
    )
    torch.rand(10)  # move the RNG on

    net2 = _model()
    opt2 = build_optimizer(net2, TrainConfig(threshold_lr=0.1))
    tensors, meta = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    ck.restore_model(net2, tensors)
    ck.restore_optimizer(opt2, tensors, meta)
    ck.restore_rng(tensors)
    assert torch.equal(torch.get_rng_state(), rng)
    assert (
        meta["state"]["global_step"] == 7 and meta["metrics"] == {"acc": 0.5} and "torch" in meta["versions"]
    )
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for pid in s1["state"]:
        for k in s1["state"][pid]:
            assert torch.equal(torch.as_tensor(s1["state"][pid][k]), torch.as_tensor(s2["state"][pid][k]))
    # identical next step
    torch.manual_seed(1)
    _step(net, opt)
    torch.manual_seed(1)
    _step(net2, opt2)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_keeps_newest_and_skips_torn(tmp_path):
    net = _model()
    opt = build_optimizer(net, TrainConfig())
    for s in (1, 2, 3):
        ck.save_checkpoint(tmp_path, s, net, opt, {}, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "step-00000002.json",
        "step-00000002.safetensors",
        "step-00000003.json",
        "step-00000003.safetensors",
    ]
    # corrupt the newest tensor file: the previous checkpoint is used, the torn one is reported
    t3 = tmp_path / "checkpoints" / "step-00000003.safetensors"
    t3.write_bytes(t3.read_bytes()[:100])
    assert ck.latest_checkpoint(tmp_path).name == "step-00000002.json"
    with pytest.raises(ck.CheckpointError, match="do not match their sidecar"):
        ck.load_checkpoint(tmp_path / "checkpoints" / "step-00000003.json")


def test_clear_errors(tmp_path):
    with pytest.raises(ck.CheckpointError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "nope.json")
    net = _model(width=8)
    opt = build_optimizer(net, TrainConfig())
    p = ck.save_checkpoint(tmp_path, 1, net, opt, {}, {})
    tensors, _ = ck.load_checkpoint(p)
    with pytest.raises(
        ck.CheckpointError,
        match=r"shape mismatch features.0.conv.weight: checkpoint \(8, 1, 3, 3\) vs model \(4, 1, 3, 3\)",
    ):
        ck.restore_model(_model(width=4), tensors)
    with pytest.raises(ck.CheckpointError, match="missing"):
        ck.restore_model(_model(mode="fp32"), {k: v for k, v in tensors.items() if "threshold" not in k})
    (tmp_path / "checkpoints" / "step-00000001.safetensors").unlink()
    with pytest.raises(ck.CheckpointError, match="checkpoint tensors missing"):
        ck.load_checkpoint(p)
    p.write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="not valid JSON"):
        ck.load_checkpoint(p)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    ck.atomic_write(target, b"old contents")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_write(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temp file left


def test_checkpoint_files_carry_no_code(tmp_path):
    net = _model()
    p = ck.save_checkpoint(tmp_path, 1, net, build_optimizer(net, TrainConfig()), {}, {"name": "x"})
    meta = json.loads(p.read_text())
    assert meta["format"] == ck.FORMAT and len(meta["sha256"]) == 64
    assert (tmp_path / "checkpoints" / meta["tensors"]).read_bytes()[:8]  # safetensors header
