"""The detection recipe machinery end to end on a tiny problem (seconds)."""

import json

import pytest
import torch

from spquant.detect.train import (
    RecipeError,
    build_detector,
    load_recipe,
    load_run,
    plot_detections,
    train_detector,
)

TINY = [
    "data.train_samples=16", "data.test_samples=8", "data.options.canvas=32", "data.options.downsample=1",
    "data.options.steps=4", "data.options.digits=[1, 1]", "model.input=[32, 32]", "model.T=2",
    "model.plan=[4, 'M', 8, 'M', 8]", "train.epochs=2", "train.batch_size=8", "train.log_every=1",
]


def test_recipes_load_and_validate():
    for name in ("detect-moving-digits", "yolo-gen1"):
        for v in ("fp32", "quant", "spquant"):
            cfg = load_recipe(f"{name}:{v}")
            assert cfg["quant"]["mode"] == v and cfg["task"] == "detect"
    assert load_recipe("detect-moving-digits", ["train.lr=0.5"])["train"]["lr"] == 0.5
    with pytest.raises(RecipeError):
        load_recipe("detect-moving-digits", ["train.nonsense=1"])
    with pytest.raises(RecipeError):
        load_recipe("detect-moving-digits:nope")
    with pytest.raises(RecipeError):
        load_recipe("no-such-recipe")
    m = build_detector(load_recipe("yolo-gen1"))
    assert m.grid == (8, 10) and m.num_classes == 2


@pytest.mark.parametrize("mode", ["fp32", "quant", "spquant"])
def test_train_eval_plot_roundtrip(tmp_path, mode):
    cfg = load_recipe(f"detect-moving-digits:{mode}", TINY + [f"data.cache_dir='{tmp_path / 'cache'}'"])
    logs = []
    m = train_detector(cfg, tmp_path / "run", log=logs.append)
    assert m["steps"] == 4 and 0.0 <= m["mAP50"] <= 1.0 and m["mode"] == mode
    assert any("test mAP@0.5" in line for line in logs)
    if mode == "spquant":
        assert any(" gate " in line for line in logs)  # predictor loss trained jointly
    static, measured = m["cost"]["static"], m["cost"]["measured"]
    assert static["lif_neurons"] == 4 * 32 * 32 + 8 * 16 * 16 + 8 * 8 * 8
    assert (static["memory_reduction"] > 5) == (mode != "fp32")
    assert measured["dense_macs"] > 0 and measured["flops_reduction"] > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["metrics"]["mAP50"] == m["mAP50"]
    model, cfg2, m2 = load_run(tmp_path / "run")
    assert m2["mAP50"] == m["mAP50"] and model.spec.mode == mode
    from spquant.detect.train import build_detection_data, evaluate_detector

    again, _, _ = evaluate_detector(model, build_detection_data(cfg2, "test"), cfg2)
    assert again["mAP50"] == pytest.approx(m["mAP50"])
    from spquant.detect.train import markdown_report, report_rows

    rows = report_rows([tmp_path / "run"])
    assert rows[0]["mAP50"] == m["mAP50"] and rows[0]["mode"] == mode
    assert "mAP@0.5" in markdown_report(rows)
    if mode == "fp32":
        assert rows[0]["drop"] == 0.0 and rows[0]["memory_x"] == 1.0
        pytest.importorskip("matplotlib")
        plot_detections(model, build_detection_data(cfg2, "test"), [0, 1], tmp_path / "d.png")
        assert (tmp_path / "d.png").stat().st_size > 1000


def test_loss_decreases_when_overfitting_one_batch():
    torch.manual_seed(0)
    cfg = load_recipe("detect-moving-digits:fp32", TINY)
    cfg["data"]["cache_dir"] = None
    from spquant.data.detection import collate_detection
    from spquant.detect.loss import YOLOLoss
    from spquant.detect.train import build_detection_data

    ds = build_detection_data(cfg, "train")
    x, boxes = collate_detection([ds[i] for i in range(8)])
    model = build_detector(cfg)
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


def test_spquant_train_dispatches_detection_recipes(tmp_path, capsys):
    """`spquant train --config detect-moving-digits:...` runs the detector trainer (task = 'detect')."""
    from spquant.cli import main
    from spquant.train.config import recipe_task

    assert recipe_task("detect-moving-digits") == "detect" and recipe_task("mnist") == "classify"
    args = ["train", "--config", "detect-moving-digits:quant", "--out", str(tmp_path / "run"), "--no-progress"]
    for s in TINY + [f"data.cache_dir='{tmp_path / 'cache'}'"]:
        args += ["--set", s]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["mode"] == "quant"
