"""Integer runtime speed: the interpreter's fast exact path vs PyTorch float eval
of the same model, in the same process, and vs the numpy reference path.

Model: VGG9 at width 0.125 (8-16-A-32-32-A-64-64-A-64-64-A-FC, ternary hidden weights, 8-bit first
and last layer, ternary membrane) on 1x32x32 inputs (real MNIST digits from the embedded subset,
zero-padded), T=4, batch 32. BatchNorm statistics are calibrated on the digits (a few train-mode
forwards, no weight updates) so the spike rates are realistic. Timings interleave the paths and
report the median of ``repeats`` runs (the machine is shared and noisy).

Run: ``python benchmarks/bench_deploy.py`` (prints JSON), or via ``benchmarks/run_all.py``.
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
    ref_all = interp.run_all(np.broadcast_to(x[:ref_batch][None], (T,) + x[:ref_batch].shape), path="reference")
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


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
