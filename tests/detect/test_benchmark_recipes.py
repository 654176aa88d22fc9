"""The Gen1 and 1 Mpx recipes: they validate, build the authors'-scale model, and train two steps
through the one run pipeline on tiny recordings in each data set's layout (written here)."""

import numpy as np
import pytest

from spquant.data.events import make_events
from spquant.data.readers.prophesee import BOX_DTYPE, write_gen1_boxes, write_prophesee_dat
from spquant.train import load_config, train
from spquant.train.data import load_split

SENSORS = {"yolo-gen1": (304, 240), "yolo-1mpx": (1280, 720)}


def _tree(root, sensor, splits=("train", "test")):
    w, h = sensor
    rng = np.random.default_rng(0)
    for split in splits:
        d = root / split
        d.mkdir(parents=True)
        n = 4000
        ev = make_events(
            rng.integers(0, w, n),
            rng.integers(0, h, n),
            np.sort(rng.integers(0, 2_000_000, n)),
            rng.integers(0, 2, n),
        )
        write_prophesee_dat(d / "rec_td.dat", ev, sensor_size=sensor)
        b = np.zeros(4, BOX_DTYPE)
        b["ts"] = [600_000, 900_000, 1_200_000, 1_500_000]
        b["x"], b["y"] = w // 4, h // 4
        b["w"], b["h"] = w // 4, h // 4
        b["class_id"] = [0, 1, 0, 1]
        write_gen1_boxes(d / "rec_bbox.npy", b)


@pytest.mark.parametrize("recipe", list(SENSORS))
def test_benchmark_recipe_validates_and_trains_two_steps(recipe, tmp_path):
    for v in ("fp32", "quant", "spquant"):
        cfg = load_config(f"{recipe}:{v}")
        assert cfg.task == "detect" and cfg.quant.mode == v
    full = load_config(recipe).build_model()
    assert full.grid == ((8, 10) if recipe == "yolo-gen1" else (12, 20))
    assert full.num_classes == (2 if recipe == "yolo-gen1" else 3)
    _tree(tmp_path / "data", SENSORS[recipe])
    small = [
        f"data.root='{tmp_path / 'data'}'",
        "model.plan=[4, 'M', 4, 'M', 4, 'M', 4, 'M', 4, 'M', 8]",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.eval_batch_size=4",
        "run.progress=false",
        "run.tensorboard=false",
        "run.threads=1",
    ]
    cfg = load_config(f"{recipe}:quant", small)
    ds = load_split(cfg, "test").dataset
    assert len(ds) == 4 and ds.benchmark == ("gen1" if recipe == "yolo-gen1" else "1mpx")
    frames, boxes = ds[0]
    assert tuple(frames.shape[-2:]) == tuple(cfg.model.input) and frames.sum() > 0 and len(boxes) == 1
    res = train(cfg, tmp_path / "run")
    assert res.metrics["steps"] == 2 and 0.0 <= res.metrics["mAP50"] <= 1.0 and res.metrics["mAP50_95"] >= 0.0
