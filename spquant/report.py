"""Comparison tables and plots of training runs (``spquant report``), classifiers and detectors.

Every run folder written by ``spquant train`` holds its config and metrics (read with
:func:`spquant.train.load_run`), including the memory accounting of docs/method.md#memory (weight
memory = parameters x weight bits, membrane
memory = LIF neurons of one sample at one step x stored bits; MB = 10^6 bytes). The numbers come
from :mod:`spquant.cost`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spquant.cost import MeasuredCost, measure_cost
from spquant.cost.summary import model_summary

__all__ = ["measured_cost_from_run", "report_rows", "markdown_table", "write_report"]


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
    from spquant.train import load_run
    from spquant.train.checkpoint import CheckpointError

    try:
        run = load_run(run_dir, checkpoint=checkpoint, device=device)
    except (CheckpointError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load run {run_dir}: {exc}") from exc
    model, config = run.model, run.config
    if data is None:
        data = "test"
    if isinstance(data, str):
        if data not in ("test", "train"):
            raise RuntimeError(
                f"data must be 'test' or 'train' (a split of the run's data config), got {data!r}"
            )
        from spquant.train.data import load_split

        split = load_split(config, data)
        T = config.model.T
        n = len(split) if max_batches is None else min(len(split), batch_size * max_batches)
        batches = [
            split.batch(torch.arange(s, min(s + batch_size, n)), T)[0] for s in range(0, n, batch_size)
        ]
        return measure_cost(model, batches, device=device)
    return measure_cost(model, data, max_batches=max_batches, device=device)


def _summary(run) -> dict:
    """A run's metrics; the memory figures are computed from its model when the run has none
    (a run written before the summary was stored)."""
    m = dict(run.metrics)
    if m.get("total_mb") is None:
        m.update(model_summary(run.model, run.config))
    return m


def report_rows(runs: list) -> list[dict]:
    """One row per :class:`~spquant.train.Run`; ``drop`` (accuracy, or mAP@0.5 for detectors) is
    against the FP32 run of the same task, data and model among them (if present)."""
    metrics = [_summary(r) for r in runs]
    key = lambda r: (r.config.task, r.config.data.dataset, r.config.model.name)  # noqa: E731
    fp32 = {}
    for r, m in zip(runs, metrics):
        if r.config.quant.mode == "fp32" and key(r) not in fp32:
            fp32[key(r)] = m
    rows = []
    for r, m in zip(runs, metrics):
        base = fp32.get(key(r))
        head = "mAP50" if r.config.task == "detect" else "test_accuracy"
        rows.append(
            {
                "run": r.config.name if r.config.name != "custom" else r.dir.name,
                "dir": str(r.dir),
                "task": r.config.task,
                "mode": r.config.quant.mode,
                "weight_bits": m.get("weight_bits"),
                "membrane_bits": m.get("membrane_bits"),
                "membrane_levels": m.get("membrane_levels"),
                "weight_mb": m.get("weight_mb"),
                "membrane_mb": m.get("membrane_mb"),
                "total_mb": m.get("total_mb"),
                "memory_x": (base["total_mb"] / m["total_mb"]) if base and m.get("total_mb") else None,
                "flops_reduction": m.get("flops_reduction"),
                "dense_mac_reduction": m.get("dense_mac_reduction", m.get("flops_reduction")),
                "effective_op_reduction": m.get("effective_op_reduction"),
                "paper_convention_reduction": m.get("paper_convention_reduction"),
                "paper_convention_batch_sizes": m.get("paper_convention_batch_sizes"),
                "kept_fraction": m.get("kept_fraction"),
                "accuracy": m.get("test_accuracy"),
                "mAP50": m.get("mAP50"),
                "mAP50_95": m.get("mAP50_95"),
                "drop": (base[head] - m[head]) if base and m.get(head) is not None else None,
                "steps": m.get("steps"),
            }
        )
    return rows


def _bits(row) -> str:
    if row["mode"] == "fp32":
        return "32 / 32"
    u = "1.58" if row.get("membrane_levels") == 3 else str(row["membrane_bits"])
    return f"{row['weight_bits']} / {u}"


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def markdown_table(rows: list[dict]) -> str:
    """Accuracy columns for classifiers, mAP columns for detectors (both when the rows mix them)."""
    cls = any(r["task"] == "classify" for r in rows)
    det = any(r["task"] == "detect" for r in rows)
    cols = [
        "run",
        "mode",
        "W / U bits",
        "weight MB",
        "membrane MB",
        "total MB",
        "memory reduction",
        "kept fraction",
        "dense MAC reduction",
        "effective op reduction",
        "authors' convention (B)",
    ]
    cols += ["accuracy"] * cls + ["mAP@0.5", "mAP@[.5:.95]"] * det + ["drop"]
    head = "| " + " | ".join(cols) + " |\n| --- | --- | --- |" + " ---: |" * (len(cols) - 3) + "\n"
    body = ""
    for r in rows:
        cells = [
            r["run"],
            r["mode"],
            _bits(r),
            _f(r["weight_mb"], ".4f"),
            _f(r["membrane_mb"], ".4f"),
            _f(r["total_mb"], ".4f"),
            f"{_f(r['memory_x'], '.2f')}x",
            _f(r.get("kept_fraction"), ".3f"),
        ]
        for key in ("dense_mac_reduction", "effective_op_reduction", "paper_convention_reduction"):
            v = r.get(key)
            cells.append(_f(v, ".2f") + ("x" if v else ""))
        bs = r.get("paper_convention_batch_sizes") or []
        if bs:
            cells[-1] += f" (B={','.join(map(str, bs))})"
        if cls:
            cells.append(f"{_f(None if r['accuracy'] is None else 100 * r['accuracy'], '.2f')} %")
        if det:
            cells += [_f(r["mAP50"], ".4f"), _f(r["mAP50_95"], ".4f")]
        if r["drop"] is None:
            cells.append("-")
        elif r["task"] == "detect":
            cells.append(f"{r['drop']:+.4f} mAP")
        else:
            cells.append(f"{100 * r['drop']:+.2f} pp")
        body += "| " + " | ".join(cells) + " |\n"
    note = (
        "\nW / U bits: weight / membrane-potential bits (1.58 = ternary membrane, stored in 2 bits as the paper counts). "
        "MB = 10^6 bytes; memory = weights x bits + LIF neurons per sample per step x membrane bits. Drop: the FP32 "
        "run's accuracy (percentage points) or mAP@0.5 minus this run's. Dense MAC reduction = dense / (kept MACs + "
        "predictor overhead); effective op reduction = dense / (accumulates of nonzero input spikes into kept outputs + "
        "membrane updates + overhead); authors' convention = the authors' released heuristic ratio, reproduced as "
        "written, at the evaluation batch size B (docs/pruning_and_cost.md).\n"
    )
    return head + body + note


def write_report(run_dirs: list, out: str | None = None, plot: bool = True) -> tuple[str, list[str]]:
    """Markdown report of ``run_dirs`` (written to ``out`` if given, plus ``out`` .png plot)."""
    from spquant.train.run import load_run

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
    score = [100 * ((r["mAP50"] if r["task"] == "detect" else r["accuracy"]) or 0) for r in rows]
    ax[0].bar(names, score, color=["#777" if r["mode"] == "fp32" else "#2a7" for r in rows])
    ax[0].set_ylabel("test accuracy / mAP@0.5 (%)")
    lo = min(score)
    ax[0].set_ylim(max(0, lo - 5), 100)
    ax[1].bar(names, [r["total_mb"] or 0 for r in rows], color="#37a")
    ax[1].set_ylabel("weight + membrane memory (MB)")
    for a in ax:
        a.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
