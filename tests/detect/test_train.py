"""Detection through the one run pipeline (spquant.train) on a tiny moving-digits problem (seconds):
same config schema, run folder, checkpoints, exact resume, load_run, eval and report."""

import json

import pytest
import torch
from safetensors.torch import load_file

from spquant.train import load_config, load_run, train
from spquant.train.config import ConfigError
from spquant.train.data import load_split
from spquant.train.loop import evaluate

TINY = [
    "data.train_subset=16",
    "data.test_subset=8",
    "data.options.canvas=32",
    "data.options.downsample=1",
    "data.options.steps=4",
    "data.options.digits=[1, 1]",
    "model.input=[32, 32]",
    "model.T=2",
    "model.plan=[4, 'M', 8, 'M', 8]",
    "train.epochs=2",
    "train.batch_size=8",
    "run.log_every=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
]


def tiny(mode, tmp_path, *extra):
    return load_config(f"detect-moving-digits:{mode}", TINY + [f"data.cache='{tmp_path / 'cache'}'", *extra])


def test_recipes_validate_in_the_one_schema():
    for name in ("detect-moving-digits", "yolo-gen1"):
        for v in ("fp32", "quant", "spquant"):
            cfg = load_config(f"{name}:{v}")
            assert cfg.quant.mode == v and cfg.task == "detect" and cfg.model.name == "yolo"
    assert load_config("detect-moving-digits", ["train.max_steps=3"]).train.max_steps == 3
    with pytest.raises(
        ConfigError, match="unknown key 'detect.lambda_cord'.*did you mean 'detect.lambda_coord'"
    ):
        load_config("detect-moving-digits", ["detect.lambda_cord=1"])
    with pytest.raises(ConfigError, match="does not fit model.name"):
        load_config("detect-moving-digits", ["model.name=vgg9"])
    m = load_config("yolo-gen1").build_model()
    assert m.grid == (8, 10) and m.num_classes == 2


@pytest.mark.parametrize("mode", ["fp32", "quant", "spquant"])
def test_train_load_eval_report(tmp_path, mode):
    from spquant.report import report_rows

    cfg = tiny(mode, tmp_path)
    res = train(cfg, tmp_path / "run")
    m = res.metrics
    assert m["steps"] == 4 and 0.0 <= m["mAP50"] <= 1.0 and m["mode"] == mode and m["task"] == "detect"
    assert m["neurons"] == 4 * 32 * 32 + 8 * 16 * 16 + 8 * 8 * 8
    assert (m["memory_reduction"] > 5) == (mode != "fp32")
    assert ("flops_reduction" in m) == (mode == "spquant")
    for f in ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "run.json"):
        assert (tmp_path / "run" / f).is_file(), f
    assert not (tmp_path / "run" / "model.pt").exists()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "eval", "final"}
    assert all("coord" in r and "noobj" in r for r in records if r["kind"] == "train")
    if mode == "spquant":
        assert all("gate_loss" in r for r in records if r["kind"] == "train")  # predictor trained jointly
    run = load_run(tmp_path / "run")
    assert run.task == "detect" and run.metrics["mAP50"] == m["mAP50"] and run.model.spec.mode == mode
    again = evaluate(run.model, load_split(run.config, "test"), run.config)
    assert again["mAP50"] == pytest.approx(m["mAP50"]) and again["samples"] == 8
    rows = report_rows([run])
    assert rows[0]["mAP50"] == m["mAP50"] and rows[0]["mode"] == mode
    if mode == "fp32":
        assert rows[0]["drop"] == 0.0 and rows[0]["memory_x"] == 1.0
        pytest.importorskip("matplotlib")
        from spquant.detect.plot import plot_detections

        plot_detections(run.model, load_split(run.config, "test").dataset, [0, 1], tmp_path / "d.png")
        assert (tmp_path / "d.png").stat().st_size > 1000


class _Killed(BaseException):
    pass


def test_detection_resume_is_exact(tmp_path, monkeypatch):
    """Stopped dead after step 3 of 4 (the loop's kill hook, made to raise in-process), then resumed:
    the same weights as an uninterrupted run."""
    import os

    cfg = tiny("quant", tmp_path, "run.checkpoint_every=1")
    train(cfg, tmp_path / "ref")

    def kill(pid, sig):
        raise _Killed

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setenv("SPQUANT_TEST_KILL_AFTER_STEP", "3")
    with pytest.raises(_Killed):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    monkeypatch.delenv("SPQUANT_TEST_KILL_AFTER_STEP")
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "run")
    train(cfg, tmp_path / "run", resume=True)
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 5
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_decreases_when_overfitting_one_batch(tmp_path):
    torch.manual_seed(0)
    cfg = tiny("fp32", tmp_path)
    from spquant.detect.loss import YOLOLoss

    x, boxes = load_split(cfg, "train").batch(torch.arange(8), cfg.model.T)
    model = cfg.build_model()
    loss_fn = YOLOLoss(model.anchors, 10, model.stride)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss, _ = loss_fn(model(x), boxes)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_cli_train_eval_report_on_a_detection_run(tmp_path, capsys):
    from spquant.cli import main

    args = [
        "train",
        "--config",
        "detect-moving-digits:quant",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    for s in TINY + [f"data.cache='{tmp_path / 'cache'}'", "train.max_steps=2"]:
        args += ["--set", s]
    assert main(args) == 0
    assert "test mAP@0.5" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]["steps"] == 2
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err  # no silent overwrite
    assert main(args + ["--overwrite"]) == 0
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(ev) >= {"mAP50", "mAP50_95", "samples"}
    assert main(["report", str(tmp_path / "run"), "--no-plot"]) == 0
    assert "| mAP@0.5 | mAP@[.5:.95] |" in capsys.readouterr().out


def test_worker_processes_read_the_same_batches(tmp_path):
    """data.workers > 0 reads batches in DataLoader worker processes: the same weights as in-process."""
    a = train(tiny("quant", tmp_path, "train.max_steps=3"), None).model.state_dict()
    b = train(tiny("quant", tmp_path, "train.max_steps=3", "data.workers=2"), None).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
