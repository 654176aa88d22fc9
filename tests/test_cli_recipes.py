"""Every shipped recipe, in every mode, from the command line: ``data prepare``, ``train --set
train.max_steps=2``, ``eval``, ``cost --checkpoint``, ``export`` and ``run`` on tiny fake data sets
written here in the exact public layouts (``$SPQUANT_DATA/<dataset>``), classification and detection.

The test ids form the table recipe x mode x command (``pytest -v tests/test_cli_recipes.py``).
Models are shrunk (width, T) so the whole table stays fast; the data, the layouts and the
commands are the real ones. FP32 runs, and runs trained on area-resized event frames (fractional
counts), have no integer form: their ``export`` must refuse with a clear error (exit status 2) and
there is no program to ``run``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from spquant.cli import main
from spquant.train.config import list_recipes, load_config
from spquant.train.data import integer_inputs

MODES = ["fp32", "quant", "spquant"]
COMMANDS = ["prepare", "train", "eval", "cost", "export", "run"]

try:  # the event-dataset writers of the data tests (public layouts of N-MNIST, CIFAR10-DVS, ...)
    from tests.data import fake_layouts
except ImportError:
    fake_layouts = None

# recipe -> overrides that shrink its model (the data keep the recipe's preprocessing)
SHRINK = {"vgg9": ["model.width=0.0625"], "resnet19": ["model.width=0.0625"], "yolo": ["model.width=0.0625"]}
SMALL = [
    "train.max_steps=2",
    "train.batch_size=4",
    "train.eval_batch_size=4",
    "data.train_subset=8",
    "data.test_subset=4",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
    "run.log_every=1",
]
EXTRA = {
    "detect-moving-digits": ["data.options.steps=4", "model.T=2"],
    "yolo-gen1": [
        "data.options.events_per_window=200",
        "model.input=[128, 160]",
    ],  # sensor scaled down by half
    "yolo-1mpx": ["model.input=[96, 160]"],
}


def _write_mnist(root: Path) -> None:
    """The four IDX files of MNIST (the public names), 24 train / 12 test images of real digits."""
    from spquant.data.embedded import load_embedded_mnist
    from spquant.data.idx import write_idx

    xtr, ytr, xte, yte = load_embedded_mnist()
    root.mkdir(parents=True)
    write_idx(root / "train-images-idx3-ubyte.gz", xtr[:24])
    write_idx(root / "train-labels-idx1-ubyte.gz", ytr[:24].astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", xte[:12])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", yte[:12].astype(np.uint8))


def _write_gen1(root: Path) -> None:
    """Gen1's layout: ``train/`` ``val/`` ``test/`` of ``<name>_td.dat`` (Prophesee DAT) + ``<name>_bbox.npy``."""
    from spquant.data.events import make_events
    from spquant.data.readers.prophesee import BOX_DTYPE, write_gen1_boxes, write_prophesee_dat

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        d = root / split
        d.mkdir(parents=True)
        n = 3000
        t = np.sort(rng.integers(0, 2_000_000, n))
        write_prophesee_dat(
            d / f"rec_{split}_td.dat",
            make_events(rng.integers(0, 304, n), rng.integers(0, 240, n), t, rng.integers(0, 2, n)),
            sensor_size=(304, 240),
        )
        ts = np.repeat(np.arange(600_000, 2_000_000, 150_000), 2)
        b = np.zeros(len(ts), BOX_DTYPE)
        b["ts"], b["x"], b["y"] = ts, rng.integers(0, 200, len(ts)), rng.integers(0, 150, len(ts))
        b["w"], b["h"], b["class_id"] = (
            rng.integers(30, 90, len(ts)),
            rng.integers(30, 80, len(ts)),
            rng.integers(0, 2, len(ts)),
        )
        write_gen1_boxes(d / f"rec_{split}_bbox.npy", b)


def _writers() -> dict:
    """dataset -> writer(folder) of its public layout."""
    out = {"mnist": _write_mnist, "gen1": _write_gen1}
    if fake_layouts is not None:
        for dataset, name in (
            ("cifar10-dvs", "write_cifar10dvs"),
            ("ncaltech101", "write_ncaltech101"),
            ("cifar10", "write_cifar10"),
            ("nmnist", "write_nmnist"),
            ("dvs128-gesture", "write_dvs128_gesture"),
        ):
            if hasattr(fake_layouts, name):
                out[dataset] = lambda folder, f=getattr(fake_layouts, name): f(folder)
        if hasattr(fake_layouts, "write_prophesee_detection"):  # 1 Mpx: type-12 DAT records, 1280x720
            out["1mpx"] = lambda folder: fake_layouts.write_prophesee_detection(
                folder, sensor=(1280, 720), event_type=12, recordings=1, events=20_000, classes=3
            )
    return out


WRITERS = _writers()


def _folder(dataset: str) -> str | None:
    """The dataset folder a recipe reads, None for data made inside spquant (embedded, synthetic)."""
    from spquant.data.roots import folder_name

    return folder_name(dataset)


def _recipe_data(recipe: str):
    return load_config(recipe).data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spquant_data")
    old = os.environ.get("SPQUANT_DATA")
    os.environ["SPQUANT_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("SPQUANT_DATA", None)
    else:
        os.environ["SPQUANT_DATA"] = old


def _cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:  # argparse (--help, usage errors)
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


_RESULTS: dict = {}


def _needs(recipe: str, root: Path) -> str | None:
    """Write the recipe's fake data set; the reason it cannot be written, or None."""
    data = _recipe_data(recipe)
    made_inside = data.dataset == "synthetic" or (
        data.dataset in ("mnist", "mnist-dvs", "moving-digits") and data.source == "embedded"
    )
    if made_inside:
        return None
    folder = _folder(data.dataset)
    if data.dataset not in WRITERS and folder not in WRITERS:
        return f"no fake {data.dataset} writer yet (tests/data/fake_layouts.py)"
    target = root / folder  # $SPQUANT_DATA/<dataset>: where the recipe, with no data.root, looks
    if not target.exists():
        WRITERS.get(data.dataset, WRITERS.get(folder))(target)
    return None


def _run_all(recipe: str, mode: str, root: Path, tmp: Path) -> dict:
    """Run every command once for (recipe, mode); {command: (rc, stdout, stderr) or ('skip', reason)}."""
    key = (recipe, mode)
    if key in _RESULTS:
        return _RESULTS[key]
    res: dict = {}
    _RESULTS[key] = res
    try:
        _commands(recipe, mode, root, tmp, res)
    except Exception:  # a crash outside the CLI's own error handling: every command not run shows it
        import traceback

        for c in COMMANDS:
            res.setdefault(c, (1, "", traceback.format_exc()))
    return res


def _commands(recipe: str, mode: str, root: Path, tmp: Path, res: dict) -> None:
    why = _needs(recipe, root)
    if why:
        for c in COMMANDS:
            res[c] = ("skip", why)
        return
    cfg = load_config(recipe)
    sets = SMALL + SHRINK.get(cfg.model.name, []) + EXTRA.get(recipe, []) + [f"data.cache={tmp / 'cache'}"]
    set_args = [a for s in sets for a in ("--set", s)]
    run_dir = tmp / f"{recipe}-{mode}"
    res["dir"] = run_dir
    spec = f"{recipe}:{mode}"

    rc, out, err = _cli(["data", "--help"])  # does this build have 'spquant data prepare'?
    if "prepare" not in out:
        res["prepare"] = ("skip", "'spquant data prepare' is not in this build yet")
    else:
        r = _cli(["data", "prepare", spec, *set_args, "--no-progress"])
        res["prepare"] = (
            ("skip", f"nothing to prepare: {r[2].strip()}") if r[0] == 2 and "no frame cache" in r[2] else r
        )
    res["train"] = _cli(["train", "--config", spec, "--out", str(run_dir), "--no-progress", *set_args])
    if res["train"][0] != 0:
        for c in COMMANDS[2:]:
            res[c] = ("skip", "train failed")
        return
    res["eval"] = _cli(["eval", str(run_dir), "--json"])
    res["cost"] = _cli(
        ["cost", "--checkpoint", str(run_dir), "--batches", "1", "--batch-size", "4", "--json"]
    )
    spq = tmp / f"{recipe}-{mode}.spq"
    res["export"] = _cli(["export", str(run_dir), "-o", str(spq)])
    if not integer_inputs(cfg):
        res["run"] = (
            "skip",
            "area-resized event frames have no integer program (its export is refused, as checked)",
        )
    elif mode == "fp32":
        res["run"] = ("skip", "an FP32 run has no integer program to run (its export is refused, as checked)")
    elif res["export"][0] != 0:
        res["run"] = ("skip", "export failed")
    else:
        res["run"] = _cli(["run", str(spq), "--batch-size", "4"])


def _check(recipe: str, mode: str, command: str, res: dict) -> None:
    got = res[command]
    if got[0] == "skip":
        pytest.skip(got[1])
    rc, out, err = got
    detect = load_config(recipe).task == "detect"
    if command == "export" and not integer_inputs(
        load_config(recipe)
    ):  # the recipe area-resizes event frames
        assert rc == 2, out + err
        assert "area-resized event frames" in err and "Traceback" not in err, err
        return
    if command == "export" and mode == "fp32":
        assert rc == 2, out + err
        assert "no integer codes" in err and "Traceback" not in err, err
        return
    assert rc == 0, f"spquant {command} failed (exit {rc}):\n{out}\n{err}"
    run_json = json.loads((res["dir"] / "run.json").read_text())["metrics"]
    if command == "prepare":
        assert "Traceback" not in err
    elif command == "train":
        assert (
            run_json["steps"] == 2
            and run_json["mode"] == mode
            and run_json["task"] == ("detect" if detect else "classify")
        )
        assert (res["dir"] / "model.safetensors").is_file() and (res["dir"] / "checkpoints").is_dir()
    elif command == "eval":
        ev = json.loads(out.strip().splitlines()[-1])
        if detect:
            assert (
                ev["mAP50"] == pytest.approx(run_json["mAP50"]) and ev["samples"] == run_json["test_samples"]
            )
        else:
            assert (
                ev["accuracy"] == pytest.approx(run_json["test_accuracy"])
                and ev["samples"] == run_json["test_samples"]
            )
    elif command == "cost":
        c = json.loads(out)
        assert c["dense_macs"] > 0 and c["samples"] > 0 and c["flops_reduction"] > 0
    elif command == "export":
        rep = json.loads(out)
        assert rep["file_bytes"] > 0 and rep["weight_params"] > 0
    elif command == "run":
        r = json.loads(out)
        if detect:
            assert 0.0 <= r["mAP50"] <= 1.0 and r["samples"] == run_json["test_samples"]
        else:
            assert 0.0 <= r["accuracy"] <= 1.0 and r["samples"] == run_json["test_samples"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("recipe", list_recipes())
def test_cli(recipe, mode, command, data_root, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp() / "cli_runs"
    tmp.mkdir(exist_ok=True)
    _check(recipe, mode, command, _run_all(recipe, mode, data_root, tmp))
