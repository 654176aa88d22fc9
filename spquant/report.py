"""Comparison tables and plots of training runs (``spquant report``).

Every run folder written by ``spquant train`` holds ``run.json`` with its config and metrics,
including the memory accounting of SPEC §10 (weight memory = parameters x weight bits, membrane
memory = LIF neurons of one sample at one step x stored bits; MB = 10^6 bytes). The numbers come
from :mod:`spquant.cost` when it is available, else from the small fallback here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

__all__ = ["model_summary", "load_run", "report_rows", "markdown_table", "write_report", "membrane_bits"]


def membrane_bits(spec) -> int:
    """Stored bits per membrane value: 32 in FP32, else ceil(log2(levels)) (ternary -> 2, as the paper counts)."""
    if not spec.quantized:
        return 32
    return max(1, math.ceil(math.log2(spec.membrane_ub - spec.membrane_lb + 1)))


def _fallback_static(model: nn.Module, input_shape) -> dict:
    from spquant.layers import QConv2d, QLinear
    from spquant.neuron import LIF

    spec = model.spec
    weight_bits_total = 0.0
    counted = set()
    for m in model.modules():
        if isinstance(m, (QConv2d, QLinear)):
            bits = getattr(m.weight_quant, "bits", 32) if getattr(m, "weight_quant", None) is not None else 32
            weight_bits_total += m.weight.numel() * bits
            counted.add(id(m.weight))
    params = sum(p.numel() for p in model.parameters())
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    weight_bits_total += other * 32  # BN, biases, thresholds, gates: FP32
    neurons = 0

    def hook(mod, inp, out):
        nonlocal neurons
        neurons += out[0, 0].numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, LIF)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 1, *input_shape, device=p.device))
    finally:
        for h in hs:
            h.remove()
        model.train(was)
    ubits = membrane_bits(spec)
    wmb = weight_bits_total / 8 / 1e6
    umb = neurons * ubits / 8 / 1e6
    return {"params": params, "neurons": neurons, "weight_mb": wmb, "membrane_mb": umb, "total_mb": wmb + umb, "cost_source": "spquant.report fallback"}


def model_summary(model: nn.Module, config, test_data=None, device="cpu", flops_batches: int = 2) -> dict:
    """Bits, memory (MB = 1e6 bytes) and, in spquant mode, the measured FLOPs reduction."""
    spec = config.quant
    input_shape = (config.model.in_channels, *config.model.input)
    out = {
        "mode": spec.mode,
        "weight_bits": spec.weight_bits if spec.quantized else 32,
        "first_bits": (spec.first_bits or 32) if spec.quantized else 32,
        "last_bits": (spec.last_bits or 32) if spec.quantized else 32,
        "membrane_bits": membrane_bits(spec),
        "membrane_levels": (spec.membrane_ub - spec.membrane_lb + 1) if spec.quantized else None,
    }
    try:
        from spquant.cost import static_cost

        sc = static_cost(model, input_shape=input_shape)
        get = (lambda k: getattr(sc, k)) if not isinstance(sc, dict) else sc.get
        out.update({"params": int(get("params")), "neurons": int(get("neurons")), "weight_mb": float(get("weight_mb")), "membrane_mb": float(get("membrane_mb")), "total_mb": float(get("total_mb")), "cost_source": "spquant.cost"})
    except (ImportError, AttributeError, TypeError, KeyError):
        out.update(_fallback_static(model, input_shape))
    if spec.pruned and test_data is not None:
        try:
            from spquant.cost import measure_cost

            batches = []
            T = config.model.T
            for s in range(flops_batches):
                idx = torch.arange(s * 100, min((s + 1) * 100, len(test_data)))
                if len(idx):
                    batches.append(test_data.batch(idx, T)[0].to(device))
            mc = measure_cost(model, batches)
            out["flops_reduction"] = float(getattr(mc, "flops_reduction"))
        except ImportError:
            pass
    return out


def load_run(run_dir) -> dict:
    p = Path(run_dir) / "run.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished spquant run (no run.json); train it first or --resume it")
    d = json.loads(p.read_text())
    d["dir"] = str(run_dir)
    return d


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
