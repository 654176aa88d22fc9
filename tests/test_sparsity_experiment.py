"""experiments/sparsity.py: the options that change what a sweep trains (``--epochs``,
``--schedule``) reach the trained model, and a section written under its own marker leaves the rest
of the file alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import sparsity  # noqa: E402

from spquant.prune import gate_modules  # noqa: E402
from spquant.train import load_config  # noqa: E402


def _row(rows, name):
    return next(r for r in rows if r[0] == name)


def test_schedule_reaches_the_budgeted_gates_only():
    rows = sparsity.rows([1.0, 0.5], from_quant=[0.5], schedule="early")
    sets = sparsity.overrides_for(_row(rows, "keep-0.5"), "embedded", None, epochs=2)
    assert "train.epochs=2" in sets and "train.epochs=1" not in sets
    model = load_config("mnist-dvs:spquant", sets).build_model()
    gates = gate_modules(model)
    assert gates and all(g.warmup == 0.05 and g.ramp == 0.15 and g.layer_keep == 0.5 for g in gates)
    # the default schedule is quant.prune's own
    sets = sparsity.overrides_for(_row(sparsity.rows([0.5]), "keep-0.5"), "embedded", None)
    assert "train.epochs=1" in sets
    gates = gate_modules(load_config("mnist-dvs:spquant", sets).build_model())
    assert all(g.warmup == 0.2 and g.ramp == 0.3 for g in gates)
    # keep 1 (the mass target) and the dense rows get no schedule overrides
    for name in ("fp32", "quant", "keep-1"):
        assert not any("warmup" in s or "ramp" in s for s in _row(rows, name)[3])
    assert all(s in _row(rows, "keep-0.5-from-quant")[3] for s in sparsity.SCHEDULES["early"])
    # the fine-tune rows train the sweep's epochs and say so
    two = sparsity.rows([0.5], from_quant=[0.5], epochs=2)
    assert all("+2 epochs" in _row(two, n)[1] for n in ("quant-ft", "keep-0.5-from-quant"))
    assert "+1 epoch from" in _row(rows, "quant-ft")[1]


def test_sweep_folder_names_the_epochs_and_schedule():
    assert sparsity.variant_name("cpu") == "cpu"
    assert sparsity.variant_name("cpu", 2, "early") == "cpu-2ep-early"
    assert sparsity.variant_name("cpu", None, "early") == "cpu-early"


@pytest.mark.parametrize("marker", ["sparsity", "sparsity-schedule"])
def test_section_replaced_between_its_own_markers(tmp_path, marker):
    other = "sparsity-schedule" if marker == "sparsity" else "sparsity"
    b, e = sparsity.markers(marker)
    ob, oe = sparsity.markers(other)
    doc = tmp_path / "doc.md"
    doc.write_text(f"head\n\n{ob}\nkeep me\n{oe}\n\n{b}\nold\n{e}\n\ntail\n")
    sparsity.write_results([b, "new", e], doc, marker)
    text = doc.read_text()
    assert "old" not in text and "new" in text and "keep me" in text
    assert text.startswith("head\n") and text.endswith("tail\n")


def test_levers_reach_the_trained_model(tmp_path):
    rows = sparsity.rows(
        [0.5],
        epochs=2,
        levers=["distill", "distill-fp32", "seed-1", "no-spatial-prior", "early", "width-0.0625"],
    )
    names = [r[0] for r in rows]
    # gated levers are fine-tuned from the Quant-SNN row, so the Quant-SNN fine-tuned alike is a row too
    assert "quant-ft" in names and "keep-0.5-from-quant" not in names
    out = str(tmp_path)

    def config(name):
        row = _row(rows, name)
        sets = [s.format(out=out) for s in sparsity.overrides_for(row, "embedded", None, epochs=2)]
        return load_config(f"mnist-dvs:{row[2]}", sets)

    c = config("keep-0.5-from-quant-distill")
    assert c.train.init_from == c.train.distill_teacher == f"{out}/quant"
    assert (c.train.distill_weight, c.train.distill_temperature) == (0.5, 2.0)
    assert c.quant.prune["keep"] == 0.5 and "spatial_prior" not in c.quant.prune
    c = config("keep-0.5-from-quant-distill-fp32")
    assert c.train.distill_teacher == f"{out}/fp32" and c.train.init_from == f"{out}/quant"
    assert config("keep-0.5-from-quant-seed-1").train.seed == 1 and c.train.seed == 0
    c = config("keep-0.5-from-quant-no-spatial-prior")
    assert c.quant.prune["spatial_prior"] is False and c.train.init_from == f"{out}/quant"
    priors = [m.prior for m in c.build_model().modules() if getattr(m, "prior", None) is not None]
    assert priors and all(p.channel and not p.spatial for p in priors)
    assert not c.train.distill_teacher
    gates = gate_modules(config("keep-0.5-from-quant-early").build_model())
    assert gates and all(g.warmup == 0.05 and g.ramp == 0.15 and g.layer_keep == 0.5 for g in gates)
    c = config("quant-width-0.0625")
    assert c.model.width == 0.0625 and c.quant.mode == "quant" and not c.train.init_from
    assert "+2 epochs" in _row(rows, "keep-0.5-from-quant-distill")[1]


def test_narrower_dense_row_reports_its_macs_against_the_quant_snn():
    def run(row, label, acc, macs):
        metrics = {"test_accuracy": acc, "dense_macs_per_step": macs}
        return {"row": row, "label": label, "metrics": metrics, "command": f"spquant train {row}"}

    runs = [run("quant", "Quant-SNN", 0.9, 4000), run("quant-width-0.0625", "narrow", 0.8, 1000)]
    runs[1]["dense_cost"] = {"effective_op_reduction": 2.5}  # over its own dense MACs
    args = type("A", (), {"cost_samples": 10, "speed_samples": 10, "repeats": 1})()
    text = "\n".join(sparsity.section(runs, {}, "embedded", args))
    narrow = next(line for line in text.splitlines() if line.startswith("| narrow |"))
    assert "0.250 (dense, narrower)" in narrow and "4.00x" in narrow and "-10.00 pt" in narrow
    assert "| 10.00x |" in narrow  # effective operations against the Quant-SNN's dense MACs
    quant = next(line for line in text.splitlines() if line.startswith("| Quant-SNN |"))
    assert "1.000 (dense) | 1.00x" in quant
