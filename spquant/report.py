"""Comparison tables and plots of training runs (``spquant report``).

Every run folder written by ``spquant train`` holds ``run.json`` with its config and metrics,
including the memory accounting of docs/method.md#memory (weight memory = parameters x weight bits, membrane
memory = LIF neurons of one sample at one step x stored bits; MB = 10^6 bytes). The numbers come
from :mod:`spquant.cost`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spquant.cost import MeasuredCost, measure_cost

__all__ = ["load_run", "measured_cost_from_run", "report_rows", "markdown_table", "write_report"]


def load_run(run_dir) -> dict:
    p = Path(run_dir) / "run.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished spquant run (no run.json); train it first or --resume it")
    d = json.loads(p.read_text())
    d["dir"] = str(run_dir)
    return d


def measured_cost_from_run(
    run_dir,
    data="test",
    max_batches: int | None = 10,
    batch_size: int = 100,
    checkpoint: bool = False,
    device: str = "cpu",
) -> MeasuredCost:
    """Measured cost of a trained run folder (written by :mod:`spquant.train`).

    The model comes from ``spquant.train.load_run(run_dir)`` (``model.safetensors``, or the newest
    checkpoint with ``checkpoint=True``). ``data`` is a split name of the run's own data config
    (``'test'`` or ``'train'``) or an iterable of ready batches ([T, B, ...] tensors or (x, y)
    pairs). With a split, the first ``max_batches`` batches of ``batch_size`` samples are used
    (``max_batches=None``: the whole split).
    """
    try:
        from spquant.train import load_run
    except ImportError as exc:  # pragma: no cover - spquant.train is part of the package now
        raise RuntimeError(
            "measured cost from a run folder needs spquant.train (checkpoint loader); use "
            "spquant.cost.measure_cost(model, batches) on a loaded model instead"
        ) from exc
    from spquant.train.checkpoint import CheckpointError

    try:
        run = load_run(run_dir, checkpoint=checkpoint, device=device)
    except (CheckpointError, OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"cannot load run {run_dir}: {exc}") from exc
    model, config = run["model"], run["config"]
    if data is None:
        data = "test"
    if isinstance(data, str):
        if data not in ("test", "train"):
            raise RuntimeError(f"data must be 'test' or 'train' (a split of the run's data config), got {data!r}")
        from spquant.train.data import load_split

        split = load_split(config, data)
        T = config.model.T
        n = len(split) if max_batches is None else min(len(split), batch_size * max_batches)
        batches = [split.batch(torch.arange(s, min(s + batch_size, n)), T)[0] for s in range(0, n, batch_size)]
        return measure_cost(model, batches, device=device)
    return measure_cost(model, data, max_batches=max_batches, device=device)


def report_rows(runs: list[dict]) -> list[dict]:
    """One row per run; ``drop`` is against the FP32 run of the same data and model (if present)."""
    fp32 = {}
    for r in runs:
        key = (r["config"]["data"]["dataset"], r["config"]["model"]["name"])
        if r["metrics"].get("mode") == "fp32" and key not in fp32:
            fp32[key] = r
    rows = []
    for r in runs:
        m = r["metrics"]
        key = (r["config"]["data"]["dataset"], r["config"]["model"]["name"])
        base = fp32.get(key)
        rows.append({
            "run": r["config"].get("name", Path(r["dir"]).name),
            "dir": r["dir"],
            "mode": m.get("mode"),
            "weight_bits": m.get("weight_bits"),
            "membrane_bits": m.get("membrane_bits"),
            "membrane_levels": m.get("membrane_levels"),
            "weight_mb": m.get("weight_mb"),
            "membrane_mb": m.get("membrane_mb"),
            "total_mb": m.get("total_mb"),
            "memory_x": (base["metrics"]["total_mb"] / m["total_mb"]) if base and m.get("total_mb") else None,
            "flops_reduction": m.get("flops_reduction"),
            "accuracy": m.get("test_accuracy"),
            "drop": (base["metrics"]["test_accuracy"] - m["test_accuracy"]) if base else None,
            "steps": m.get("steps"),
        })
    return rows


def _bits(row) -> str:
    if row["mode"] == "fp32":
        return "32 / 32"
    u = "1.58" if row.get("membrane_levels") == 3 else str(row["membrane_bits"])
    return f"{row['weight_bits']} / {u}"


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def markdown_table(rows: list[dict]) -> str:
    head = "| run | mode | W / U bits | weight MB | membrane MB | total MB | memory reduction | FLOPs reduction | accuracy | drop |\n"
    head += "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    body = ""
    for r in rows:
        body += (
            f"| {r['run']} | {r['mode']} | {_bits(r)} | {_f(r['weight_mb'], '.4f')} | {_f(r['membrane_mb'], '.4f')} | "
            f"{_f(r['total_mb'], '.4f')} | {_f(r['memory_x'], '.2f')}x | {_f(r['flops_reduction'], '.2f')}{'x' if r['flops_reduction'] else ''} | "
            f"{_f(None if r['accuracy'] is None else 100 * r['accuracy'], '.2f')} % | "
            f"{_f(None if r['drop'] is None else 100 * r['drop'], '+.2f')}{' pp' if r['drop'] is not None else ''} |\n"
        )
    note = "\nW / U bits: weight / membrane-potential bits (1.58 = ternary membrane, stored in 2 bits as the paper counts). MB = 10^6 bytes; memory = weights x bits + LIF neurons per sample per step x membrane bits. Drop: FP32 accuracy minus this run's, in percentage points.\n"
    return head + body + note


def write_report(run_dirs: list, out: str | None = None, plot: bool = True) -> tuple[str, list[str]]:
    """Markdown report of ``run_dirs`` (written to ``out`` if given, plus ``out`` .png plot)."""
    runs = [load_run(d) for d in run_dirs]
    rows = report_rows(runs)
    md = "# spquant report\n\n" + markdown_table(rows)
    messages = []
    if out:
        outp = Path(out)
        outp.parent.mkdir(parents=True, exist_ok=True)
        if plot:
            png = outp.with_suffix(".png")
            try:
                _plot(rows, png)
                md += f"\n![accuracy vs memory]({png.name})\n"
                messages.append(f"wrote {png}")
            except ImportError:
                messages.append("matplotlib not installed: plot skipped (pip install 'spquant[plot]')")
        outp.write_text(md)
        messages.append(f"wrote {outp}")
    return md, messages


def _plot(rows, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["run"] for r in rows]
    ax[0].bar(names, [100 * (r["accuracy"] or 0) for r in rows], color=["#777" if r["mode"] == "fp32" else "#2a7" for r in rows])
    ax[0].set_ylabel("test accuracy (%)")
    lo = min(100 * (r["accuracy"] or 0) for r in rows)
    ax[0].set_ylim(max(0, lo - 5), 100)
    ax[1].bar(names, [r["total_mb"] or 0 for r in rows], color="#37a")
    ax[1].set_ylabel("weight + membrane memory (MB)")
    for a in ax:
        a.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
