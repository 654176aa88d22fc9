"""experiments/results.py --seeds: every seed trains its own folder with its own seed, the table
pairs each row with the FP32 run of the same seed, and its section replaces only its own markers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import quant_results  # noqa: E402
import results  # noqa: E402


def _run(label, acc, mem=None, flops=None):
    m = {"test_accuracy": acc}
    if mem is not None:
        m["memory_reduction_packed"] = mem
    if flops is not None:
        m["flops_reduction"] = flops
    return {"label": label, "metrics": m}


def test_seed_row_trains_its_own_folder_with_its_seed():
    row = results.MAIN_ROWS["events"][2]
    r = results.seed_row(row, 2)
    assert r[0] == "events-spquant/seed2" and r[1:4] == row[1:4]
    config, overrides = results.row_config(r, "smoke", 0.125, [])
    assert config.train.seed == 2  # the seed override comes after COMMON's train.seed=0
    assert overrides[-1] == "train.seed=2" and "quant.prune.predictor_bits=2" in overrides
    assert "--out runs/results/events-spquant/seed2" in results.command_for(r, overrides)


def test_t_interval():
    assert quant_results.t_interval([1.0]) is None
    lo, hi = quant_results.t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(2 dof) = 4.30: half width 4.30 / sqrt(3)
    assert lo == pytest.approx(2 - 4.30 / 3**0.5) and hi == pytest.approx(2 + 4.30 / 3**0.5)
    assert quant_results._noise([1.0, 2.0, 3.0]).startswith("contains 0")
    assert quant_results._noise([1.0, 1.1, 0.9]) == "excludes 0"


def test_seeds_table_pairs_each_row_with_its_own_seed():
    runs = {
        0: [_run("FP32 SNN", 0.98), _run("Quant-SNN", 0.97, 17.0), _run("SpQuant-SNN", 0.98, 16.0, 1.1)],
        1: [_run("FP32 SNN", 0.96), _run("Quant-SNN", 0.95, 17.2), _run("SpQuant-SNN", 0.95, 16.0, 1.3)],
        2: [_run("FP32 SNN", 0.97), _run("Quant-SNN", 0.961, 17.1), _run("SpQuant-SNN", 0.96, 16.0, 1.2)],
    }
    lines = results.seeds_table(runs)
    fp32, quant, sp = (
        next(x for x in lines if x.startswith(f"| {k} |")) for k in ("FP32 SNN", "Quant-SNN", "SpQuant-SNN")
    )
    assert "| 3 | 97.00 +- 1.00 | 98.00, 96.00, 97.00 | 0 (reference) |" in fp32
    # paired drops 1.0, 1.0, 0.9: small spread, the interval excludes 0 although the accuracies'
    # own spread (1 pt) is as large as the drop
    assert "| 0.97 +- 0.06 |" in quant and "excludes 0" in quant and "17.10x" in quant
    assert "1.00x (dense)" in quant
    # SpQuant drops 0.0, 1.0, 1.0: within noise
    assert "| 0.67 +- 0.58 |" in sp and "within noise" in sp and "1.20x" in sp
    paired = next(x for x in lines if x.startswith("SpQuant-SNN - Quant-SNN"))
    assert "0.30 +- 0.61 pt" in paired and "within noise" in paired


def test_seeds_table_one_seed_says_so():
    lines = results.seeds_table({0: [_run("FP32 SNN", 0.98), _run("Quant-SNN", 0.97)]})
    quant = next(x for x in lines if x.startswith("| Quant-SNN |"))
    assert "| 1.00 | one seed |" in quant


def test_marked_section_replaced_alone(tmp_path):
    doc = tmp_path / "RESULTS.md"
    s, e = results.SEEDS_START, results.SEEDS_END
    doc.write_text(
        f"# head\n\n| table | 1 |\n\n<!-- other:start -->\nkeep\n<!-- other:end -->\n\n{s}\nold\n{e}\n\ntail\n"
    )
    results.write_marked(doc, [s, "new", e], s, e)
    text = doc.read_text()
    assert "old" not in text and f"{s}\nnew\n{e}" in text
    assert text.startswith("# head\n\n| table | 1 |\n\n<!-- other:start -->\nkeep\n<!-- other:end -->")
    assert text.endswith("\n\ntail\n")
    # absent markers: appended once, then replaced in place
    doc2 = tmp_path / "b.md"
    doc2.write_text("top\n")
    results.write_marked(doc2, [s, "a", e], s, e)
    results.write_marked(doc2, [s, "b", e], s, e)
    assert doc2.read_text() == f"top\n\n{s}\nb\n{e}\n"
