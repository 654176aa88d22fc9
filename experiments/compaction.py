"""What compaction buys on trained SpQuant runs: channels whose integer gate can never open,
memory as deployed before and after, and the interpreter's speed (docs/deploy.md, "Compaction").

For each run folder: fold the model, classify every gate row (never kept / always kept / decided
per input), compact, check on test samples that the compacted program's logits equal the original
program's (fast path; the reference path on the first 16), and time, alternating in one process,
the original program (skipping fast path, calibrated), the compacted program (calibrated) and the
PyTorch float eval of the same model; median and min-max over the repeats of the process CPU time
(one thread: on a loaded machine wall time mostly measures the scheduler), with the load average.

    OMP_NUM_THREADS=1 python experiments/compaction.py RUN [RUN ...] [--samples 200 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spquant.deploy import Interpreter, fold_model, input_encoding  # noqa: E402
from spquant.deploy.compact import compact, static_gate_rows  # noqa: E402
from spquant.deploy.memory import deployed_memory  # noqa: E402
from spquant.train import load_run  # noqa: E402
from spquant.train.data import load_split  # noqa: E402


def _median_spread(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def measure(run: str, samples: int, repeats: int) -> dict:
    loaded = load_run(run)
    model, config = loaded["model"].eval(), loaded["config"]
    enc = input_encoding(config)
    program = fold_model(
        model, enc["input_shape"], input_bits=enc["input_bits"], input_scale=enc["input_scale"]
    )
    rows = {}
    for n in program.nodes:
        if n["op"] == "channel_gate":
            off, on = static_gate_rows(program, n)
            rows[n["name"]] = {"rows": len(off), "never": int(off.sum()), "always": int(on.sum())}
    small, report = compact(program)
    before, after = deployed_memory(program), deployed_memory(small)
    test = load_split(config, "test")
    T = config.model.T
    n = min(samples, len(test))
    x = test.batch(torch.arange(0, n), T)[0]
    codes = test.inputs[:n].numpy()
    codes = codes if test.static else np.moveaxis(codes, 1, 0)
    t_arg = T if test.static else None
    big, sm = Interpreter(program), Interpreter(small)
    head = codes[:16] if test.static else codes[:, :16]
    equal_ref = bool(
        np.array_equal(big.run(head, t_arg, path="reference"), sm.run(head, t_arg, path="reference"))
    )
    big.calibrate(codes, t_arg, repeats=2)
    sm.calibrate(codes, t_arg, repeats=2)
    logits = big.run(codes, t_arg, path="fast")
    equal_fast = bool(np.array_equal(logits, sm.run(codes, t_arg, path="fast")))
    labels = test.labels[:n].numpy()
    acc = float((logits.sum(0).argmax(-1) == labels).mean())
    fns = {
        "original_skipping": lambda: big.run(codes, t_arg, path="fast"),
        "compacted": lambda: sm.run(codes, t_arg, path="fast"),
    }
    times = {k: [] for k in [*fns, "torch_float_eval"]}
    with torch.no_grad():
        fns["torch_float_eval"] = lambda: model(x)
        for f in fns.values():
            f()
        for _ in range(repeats):  # alternate so load changes hit every variant alike
            for k, f in fns.items():
                t0 = time.process_time()
                f()
                times[k].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "run": run,
        "gate_rows": rows,
        "compaction": report.to_dict(),
        "memory_reduction_before": before.reduction,
        "memory_reduction_after": after.reduction,
        "weight_bytes_before": before.weight_bytes,
        "weight_bytes_after": after.weight_bytes,
        "integer_accuracy_first_n": acc,
        "samples": n,
        "compacted_equals_original_reference_16": equal_ref,
        "compacted_equals_original_fast": equal_fast,
        "seconds": {k: _median_spread(v) for k, v in times.items()},
        "compacted_vs_original": med["original_skipping"] / med["compacted"],
        "compacted_vs_torch_float": med["torch_float_eval"] / med["compacted"],
        "original_vs_torch_float": med["torch_float_eval"] / med["original_skipping"],
        "load_avg_1min": os.getloadavg()[0],
        "repeats": repeats,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for run in args.runs:
        print(json.dumps(measure(run, args.samples, args.repeats), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
