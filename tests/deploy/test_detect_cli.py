"""``spquant export`` of a trained detection run and ``spquant run`` on its detection test set: the
mAP the CLI reports equals the mAP of deploy-simulation on the same samples."""

import json

import numpy as np
import torch

from spquant.cli import main
from spquant.deploy import DeploySim, load
from spquant.deploy.detection import detection_meta, evaluate_integer_detector
from spquant.train import load_config, load_run, train
from spquant.train.data import load_split

TINY = [
    "data.train_subset=24",
    "data.test_subset=12",
    "data.options.canvas=32",
    "data.options.downsample=1",
    "data.options.steps=4",
    "data.options.digits=[1, 2]",
    "model.input=[32, 32]",
    "model.T=2",
    "model.plan=[6, 'M', 8, 'M', 8]",
    "model.head_kernel=3",
    "train.epochs=2",
    "train.batch_size=8",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
    "detect.conf_threshold=0.01",
]


def test_export_and_run_detector_map_equals_deploy_sim(tmp_path, capsys):
    cfg = load_config("detect-moving-digits:quant", TINY + [f"data.cache='{tmp_path / 'cache'}'"])
    train(cfg, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "det.spq")]) == 0
    program = load(tmp_path / "det.spq")
    meta = detection_meta(program)
    assert meta["num_classes"] == 10 and len(meta["anchors"]) == 2
    assert program.nodes[-1]["kernel"] == 3
    capsys.readouterr()
    assert main(["run", str(tmp_path / "det.spq")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 12
    run = load_run(tmp_path / "run")
    ds = load_split(run.config, "test").dataset
    sim = DeploySim(program)
    x = torch.stack([ds[i][0] for i in range(12)], 1)
    codes = program.encode_input(x)
    assert np.array_equal(codes, x.numpy())
    ref = evaluate_integer_detector(
        lambda c: sim.run_codes(torch.from_numpy(c))[program.output].numpy().astype(np.int64),
        program,
        [(codes, [ds[i][1] for i in range(12)])],
        run.config.detect.conf_threshold,
        run.config.detect.nms_iou,
        run.config.detect.max_det,
    )
    assert res["mAP50"] == ref["mAP50"] and res["mAP50_95"] == ref["mAP50_95"]
