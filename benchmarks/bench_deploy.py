"""Integer runtime speed: the interpreter's fast exact path vs PyTorch float eval
of the same model, in the same process, and vs the numpy reference path.

Model: VGG9 at width 0.125 (8-16-A-32-32-A-64-64-A-64-64-A-FC, ternary hidden weights, 8-bit first
and last layer, ternary membrane) on 1x32x32 inputs (real MNIST digits from the embedded subset,
zero-padded), T=4, batch 32. BatchNorm statistics are calibrated on the digits (a few train-mode
forwards, no weight updates) so the spike rates are realistic. Timings interleave the paths and
report the median of ``repeats`` runs (the machine is shared and noisy).

Second part (``pruned``): a SpQuant model (learned gates + membrane prior) through the skipping
fast path vs the same interpreter with skipping disabled vs PyTorch float eval, same process,
alternating repeats, median and min-max spread. ``--run RUN`` times a trained run folder on its own
test data (e.g. a keep-sweep run of experiments/sparsity.py); without it an untrained model with
calibrated BN and gate biases drawn so that about half of the channels are kept is used.

The compacted program (``spquant.deploy.compact``: channels whose gate can never open removed,
constant gates dropped; what ``spquant export`` writes) is timed beside them.

Run: ``python benchmarks/bench_deploy.py [--run RUN]`` (prints JSON), or via ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spquant.data.embedded import load_embedded_mnist  # noqa: E402
from spquant.deploy import Interpreter, fold_model  # noqa: E402
from spquant.models import VGG9, QuantSpec  # noqa: E402


def build(T: int = 4, batch: int = 32, width: float = 0.125, seed: int = 0):
    torch.manual_seed(seed)
    _, _, xte, yte = load_embedded_mnist()
    x = np.pad(xte[:batch], ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.int64)  # [B, 1, 32, 32]
    net = VGG9(10, in_channels=1, input_size=32, width=width, spec=QuantSpec(mode="quant"))
    xs = torch.from_numpy(x).float().div(255)[None].expand(T, *x.shape).contiguous()
    with torch.no_grad():  # BN calibration: running statistics from the data, no weight updates
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        for _ in range(2):
            net(xs)
    net.eval()
    return net, x, xs


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(repeats: int = 5, T: int = 4, batch: int = 32) -> dict:
    net, x, xs = build(T, batch)
    program = fold_model(net, (1, 32, 32))
    interp = Interpreter(program)
    ref_batch = 8
    # exactness first: fast == reference on the same inputs (all layers), fast == deploy-sim logits
    fast_all = interp.run_all(x[:ref_batch], T=T, path="fast")
    ref_all = interp.run_all(
        np.broadcast_to(x[:ref_batch][None], (T,) + x[:ref_batch].shape), path="reference"
    )
    bit_identical = all(np.array_equal(fast_all[k], ref_all[k]) for k in ref_all)
    spike_rate = float(np.mean([fast_all[n["output"]].mean() for n in program.nodes if n["op"] == "lif"]))

    def run_float():
        with torch.no_grad():
            net(xs)

    def run_fast():
        interp.run(x, T=T, path="fast")

    def run_ref():
        interp.run(x[:ref_batch], T=T, path="reference")

    run_float(), run_fast()  # warm-up
    tf, tx, tr = [], [], []
    for _ in range(repeats):
        tf.append(_time(run_float))
        tx.append(_time(run_fast))
    for _ in range(max(1, repeats // 2)):
        tr.append(_time(run_ref))
    f, x_, r = statistics.median(tf), statistics.median(tx), statistics.median(tr)
    float_sps, fast_sps, ref_sps = batch / f, batch / x_, ref_batch / r
    res = {
        "benchmark": "deploy",
        "model": f"VGG9 w=0.125 1x32x32 T={T} batch={batch} (ternary hidden, 8-bit first/last, ternary membrane)",
        "torch_threads": torch.get_num_threads(),
        "float_eval_samples_per_s": round(float_sps, 1),
        "fast_samples_per_s": round(fast_sps, 1),
        "reference_samples_per_s": round(ref_sps, 1),
        "ratio_fast_vs_float": round(fast_sps / float_sps, 2),
        "ratio_fast_vs_reference": round(fast_sps / ref_sps, 1),
        "fast_bit_identical_to_reference": bit_identical,
        "mean_spike_rate": round(spike_rate, 4),
        "goal": "fast >= 2x float eval, bit-identical",
        "goal_met": bool(bit_identical and fast_sps / float_sps >= 2.0),
        "repeats": repeats,
    }
    return res


def _pruned_model(T: int, batch: int, seed: int = 0):
    from spquant.layers import ConvBNLIF

    torch.manual_seed(seed)
    _, _, xte, _ = load_embedded_mnist()
    x = np.pad(xte[:batch], ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.int64)
    spec = QuantSpec(mode="spquant", prune={"predictor_bits": 2})
    net = VGG9(10, in_channels=1, input_size=32, width=0.125, spec=spec)
    xs = torch.from_numpy(x).float().div(255)[None].expand(T, *x.shape).contiguous()
    with torch.no_grad():
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
            if isinstance(m, ConvBNLIF) and m.gate is not None:
                m.gate.predictor.weight.normal_(0, 0.5)
                m.gate.predictor.bias.normal_(0, 1.5)
        for _ in range(2):
            net(xs)
    net.eval()
    program = fold_model(net, (1, 32, 32))
    return net, program, x, xs, T


def _run_model(run: str, batch: int):
    from spquant.deploy import input_encoding
    from spquant.train import load_run
    from spquant.train.data import load_split

    loaded = load_run(run)
    net, config = loaded["model"].eval(), loaded["config"]
    enc = input_encoding(config)
    program = fold_model(
        net, enc["input_shape"], input_bits=enc["input_bits"], input_scale=enc["input_scale"]
    )
    test = load_split(config, "test")
    T = config.model.T
    xs = test.batch(torch.arange(0, batch), T)[0]
    codes = test.inputs[:batch].numpy()
    return (
        net,
        program,
        (codes if test.static else np.moveaxis(codes, 1, 0)),
        xs,
        (T if test.static else None),
    )


def pruned(repeats: int = 5, T: int = 4, batch: int = 64, run: str | None = None) -> dict:
    net, program, x, xs, t_arg = _run_model(run, batch) if run else _pruned_model(T, batch)
    interp = Interpreter(program)
    ref = interp.run_all(x[:8] if t_arg else x[:, :8], T=t_arg, path="reference")
    fast = interp.run_all(x[:8] if t_arg else x[:, :8], T=t_arg, path="fast")
    bit_identical = all(np.array_equal(ref[k], fast[k]) for k in ref)
    choice = interp.calibrate(x, T=t_arg, repeats=2)
    logits_skip = interp.run(x, T=t_arg, path="fast")
    interp.skipping = False
    same = bool(np.array_equal(logits_skip, interp.run(x, T=t_arg, path="fast")))
    interp.skipping = True
    from spquant.deploy.compact import compact

    small, report = compact(program)
    interp_small = Interpreter(small)
    interp_small.calibrate(x, T=t_arg, repeats=2)
    same_compact = bool(np.array_equal(logits_skip, interp_small.run(x, T=t_arg, path="fast")))

    def run_compact():
        interp_small.run(x, T=t_arg, path="fast")

    def run_skip():
        interp.skipping = True
        interp.run(x, T=t_arg, path="fast")

    def run_noskip():
        interp.skipping = False
        interp.run(x, T=t_arg, path="fast")
        interp.skipping = True

    def run_float():
        with torch.no_grad():
            net(xs)

    fns = {
        "skipping": run_skip,
        "skipping_disabled": run_noskip,
        "float_eval": run_float,
        "compacted": run_compact,
    }
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_time(f))
    med = {k: statistics.median(v) for k, v in times.items()}
    kept = float(
        np.mean(
            [
                ref[n["inputs"][1]].mean()
                for n in program.nodes
                if n["op"] == "lif_pruned" and len(n["inputs"]) > 1
            ]
        )
    )
    return {
        "benchmark": "deploy-pruned",
        "model": run or f"untrained VGG9 w=0.125 spquant, random gate biases, 1x32x32 T={T}",
        "batch": batch,
        "gate_on_fraction": round(kept, 3),
        "paths": choice,
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "seconds_min_max": {k: [round(min(v), 4), round(max(v), 4)] for k, v in times.items()},
        "ratio_skipping_vs_disabled": round(med["skipping_disabled"] / med["skipping"], 2),
        "ratio_skipping_vs_float_eval": round(med["float_eval"] / med["skipping"], 2),
        "ratio_compacted_vs_float_eval": round(med["float_eval"] / med["compacted"], 2),
        "ratio_compacted_vs_skipping": round(med["skipping"] / med["compacted"], 2),
        "compaction": report.to_dict(),
        "compacted_equals_skipping_logits": same_compact,
        "bit_identical_all_tensors_8_samples": bit_identical,
        "skipping_equals_disabled_logits": same,
        "goal": "skipping >= 2x skipping disabled and >= 3x float eval, bit-identical",
        "repeats": repeats,
    }


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a trained SpQuant run folder for the pruned part")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"quant": main(args.repeats), "pruned": pruned(args.repeats, run=args.run)}, indent=2))
