"""Hand-built integer programs against a brute-force oracle: plain Python integers and loops over
every element, written from the node rules in spquant/deploy/program.py and sharing no code with
the interpreter. Each program is built to reach a branch the trained models do not: a gate on a
static input, every gate off at one step, a threshold above the top membrane level, thresholds and
requantization products past 2^24 (the int64 paths), a sum pool on 8-bit pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy import Interpreter
from spquant.deploy.program import Program

pytestmark = pytest.mark.usefixtures("one_thread")

F = 4  # fractional bits of every program here


# ------------------------------------------------------------------------------------------------
# the oracle: Python ints, one element at a time
# ------------------------------------------------------------------------------------------------
def _requant(acc: int, M: int, B: int, S: int) -> int:
    return (acc * M + B + ((1 << (S - 1)) if S > 0 else 0)) >> S  # Python >> floors, like the rule


def _conv(x, w, stride, pad):
    """x [C][H][W], w [O][C][k][k] (nested lists of int) -> (acc [O][Ho][Wo], nonzero products)."""
    C, H, W = len(x), len(x[0]), len(x[0][0])
    O, k = len(w), len(w[0][0])
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    acc = [[[0] * Wo for _ in range(Ho)] for _ in range(O)]
    nz = 0
    for o in range(O):
        for i in range(Ho):
            for j in range(Wo):
                s = 0
                for c in range(C):
                    for di in range(k):
                        for dj in range(k):
                            r, q = i * stride + di - pad, j * stride + dj - pad
                            if 0 <= r < H and 0 <= q < W:
                                s += x[c][r][q] * w[o][c][di][dj]
                                nz += x[c][r][q] != 0 and w[o][c][di][dj] != 0
                acc[o][i][j] = s
    return acc, nz


def _gate(x, A, hi, lo, kb, fe):
    """Per-channel input sums -> the integer softmax numerators -> (A @ E >= 0) per output channel."""
    cnt = [sum(sum(row) for row in ch) for ch in x]
    top = max(cnt)
    E = [(hi[(top - c) >> kb] * lo[(top - c) & ((1 << kb) - 1)] + (1 << (fe - 1))) >> fe for c in cnt]
    return [int(sum(a * e for a, e in zip(row, E)) >= 0) for row in A]


def _flat(v):
    return [e for row in v for e in (_flat(row) if isinstance(row, list) else [row])]


def _shape_of(v):
    return [len(v)] + (_shape_of(v[0]) if isinstance(v[0], list) else [])


def _unflat(vals, shape):
    if len(shape) == 1:
        return list(vals)
    n = len(vals) // shape[0]
    return [_unflat(vals[i * n : (i + 1) * n], shape[1:]) for i in range(shape[0])]


def oracle(program: Program, x: np.ndarray) -> dict:
    """Every named tensor [T][B][...] as nested lists, plus the counts the reference path reports."""
    a = program.arrays
    T, Bn = x.shape[:2]
    env = {program.input["name"]: x.tolist()}
    stats = {"dense_macs": 0, "sops": 0, "spikes": {}, "neuron_updates": 0, "trace": []}
    for n in program.nodes:
        src = env[n["inputs"][0]]
        op = n["op"]
        if op in ("conv", "linear"):
            w = a[n["weight"]].tolist()
            M, B, S = a[n["M"]].tolist(), a[n["B"]].tolist(), int(n["shift"])
            out = []
            for t in range(T):
                row = []
                for b in range(Bn):
                    if op == "conv":
                        acc, nz = _conv(src[t][b], w, n["stride"], n["padding"])
                        fan = len(w[0]) * len(w[0][0]) ** 2
                        row.append(
                            [
                                [[_requant(v, M[o], B[o], S) for v in r] for r in ch]
                                for o, ch in enumerate(acc)
                            ]
                        )
                        stats["dense_macs"] += len(_flat(acc)) * fan
                    else:
                        xs = src[t][b]
                        accs = [sum(xi * wi for xi, wi in zip(xs, wo)) for wo in w]
                        nz = sum(xi != 0 and wi != 0 for wo in w for xi, wi in zip(xs, wo))
                        row.append([_requant(v, M[o], B[o], S) for o, v in enumerate(accs)])
                        stats["dense_macs"] += len(w) * len(w[0])
                    stats["sops"] += nz
                out.append(row)
        elif op == "channel_gate":
            A, hi, lo = a[n["A"]].tolist(), a[n["exp_hi"]].tolist(), a[n["exp_lo"]].tolist()
            kb, fe = int(n["lo_bits"]), int(n["exp_frac_bits"])
            out = [[_gate(src[t][b], A, hi, lo, kb, fe) for b in range(Bn)] for t in range(T)]
        elif op in ("lif", "lif_pruned"):
            V = a[n["V"]].tolist()
            k, lb, ub = int(n["tau_shift"]), int(n["lb"]), int(n["ub"])
            gate = env[n["inputs"][1]] if len(n["inputs"]) > 1 else None
            shape = _shape_of(src[0][0])
            out = [[None] * Bn for _ in range(T)]
            for b in range(Bn):
                m = [0] * len(_flat(src[0][b]))
                for t in range(T):
                    cur = _flat(src[t][b])
                    per_c = len(cur) // shape[0]
                    keep = [1] * len(cur)
                    if gate is not None:
                        keep = [gate[t][b][i // per_c] for i in range(len(cur))]
                    if op == "lif_pruned" and t > 0:
                        sums = [sum(m[c * per_c : (c + 1) * per_c]) for c in range(shape[0])]
                        for i in range(len(cur)):
                            if n["prior_channel"] and sums[i // per_c] < n["prior_channel_min"]:
                                keep[i] = 0
                            if n["prior_spatial"] and not m[i] > n["prior_spatial_level"]:
                                keep[i] = 0
                    spikes = []
                    for i in range(len(cur)):
                        u = ((m[i] << F) >> k) + cur[i] * keep[i]
                        v = V[i // per_c] if len(V) > 1 else V[0]
                        s = int(u > v)
                        stats["trace"].append((n["name"], t, u, v, s))
                        m[i] = 0 if s else min(max((u + (1 << (F - 1))) >> F, lb), ub)
                        spikes.append(s)
                    out[t][b] = _unflat(spikes, shape)
            stats["spikes"][n["name"]] = sum(_flat(out))
            stats["neuron_updates"] += len(_flat(out))
        elif op == "sumpool":
            k = int(n["kernel"])
            out = [
                [
                    [
                        [
                            [
                                sum(ch[i * k + di][j * k + dj] for di in range(k) for dj in range(k))
                                for j in range(len(ch[0]) // k)
                            ]
                            for i in range(len(ch) // k)
                        ]
                        for ch in src[t][b]
                    ]
                    for b in range(Bn)
                ]
                for t in range(T)
            ]
        elif op == "flatten":
            out = [[_flat(src[t][b]) for b in range(Bn)] for t in range(T)]
        else:
            raise AssertionError(f"the oracle has no rule for {op}")
        env[n["output"]] = out
    return {"env": env, **stats}


# ------------------------------------------------------------------------------------------------
# programs
# ------------------------------------------------------------------------------------------------
def _node(op, name, inputs, **kw):
    return {"op": op, "name": name, "inputs": list(inputs), "output": name, **kw}


def gated_program(epilogue: str, big_threshold: bool) -> Program:
    """x [2, 4, 4] (codes 0..3) -> gate(x) and conv3x3(x) -> pruned LIF (gate, both priors) ->
    2x2 sum pool -> flatten -> linear. Channel 2's gate row is negative: never kept. Channel 1's
    threshold lies above the top membrane level (the clamp at ub decides its spikes).
    ``epilogue``: ``"f32"``; ``"f64"``: M, B scaled by 2^20 (M plus 1) and S raised by 20 (nearly
    the same integers, but acc*M+B passes 2^24 with a low bit set: the float64 epilogue);
    ``"i64"``: the same at 2^45 (acc*M+B passes 2^53: the int64 epilogue); ``big_threshold``: channel 0 never spikes (V > 2^24: the
    int64 LIF)."""
    r = np.random.RandomState(7)
    up = {"f32": 0, "f64": 20, "i64": 45}[epilogue]
    arrays = {
        "A": np.array([[3, -4], [-4, 3], [-1, -1]], np.int64),
        "exp_lo": np.round(2**8 * np.exp(-0.1 * np.arange(4))).astype(np.int64),
        "exp_hi": np.round(2**8 * np.exp(-0.4 * np.arange(13))).astype(np.int64),
        "w1": r.randint(-1, 2, size=(3, 2, 3, 3)).astype(np.int8),
        # + 1: products with significant bits from 2^0 to past 2^24 (float32 could not hold them)
        "M1": (np.array([12, 16, 6], np.int64) << up) + (1 if up else 0),
        "B1": np.array([-8, 120, 4], np.int64) << up,
        "V1": np.array([2**24 + 3 if big_threshold else 30, 64, 25], np.int64),
        "w2": r.randint(-3, 4, size=(4, 12)).astype(np.int8),
        "M2": np.array([3, 5, 2, 4], np.int64),
        "B2": np.array([1, -2, 0, 3], np.int64),
    }
    nodes = [
        _node(
            "channel_gate", "g1", ["x"], A="A", exp_hi="exp_hi", exp_lo="exp_lo", lo_bits=2, exp_frac_bits=8
        ),
        _node(
            "conv",
            "c1",
            ["x"],
            weight="w1",
            M="M1",
            B="B1",
            shift=2 + up,
            kernel=3,
            stride=1,
            padding=1,
            bits=2,
            max_code=1,
        ),
        _node(
            "lif_pruned",
            "l1",
            ["c1", "g1"],
            V="V1",
            tau_shift=1,
            lb=-2,
            ub=3,
            prior_channel=1,
            prior_channel_min=-6,
            prior_spatial=1,
            prior_spatial_level=-2,
        ),
        _node("sumpool", "p1", ["l1"], kernel=2),
        _node("flatten", "f1", ["p1"]),
        _node("linear", "fc", ["f1"], weight="w2", M="M2", B="B2", shift=1, bits=3, max_code=3),
    ]
    return Program(
        input={"name": "x", "shape": [2, 4, 4], "bits": 2, "scale": 1 / 3, "max": 3},
        frac_bits=F,
        nodes=nodes,
        arrays=arrays,
    )


def _inputs(static: bool) -> np.ndarray:
    r = np.random.RandomState(11)
    if static:
        x = r.randint(0, 4, size=(4, 2, 4, 4))
        x[0, 0] = 3  # sample 0: channel 0 dominates (gate row 0 keeps), sample 1: channel 1 does
        x[1, 1] = 3
        return x
    x = r.randint(0, 4, size=(5, 3, 2, 4, 4))
    x[0] = 0  # step 0: no input anywhere, every gate off in every sample
    x[2, 0, 0] = 3
    x[3:, 1, 1] = 3  # sample 1 keeps channel 1 for two steps
    return x


def _fast(interp, x, T, skipping, path):
    interp.skipping = skipping
    interp.skip_paths = {c["name"]: path for c in interp._conv_of.values()}
    try:
        return interp.run_all(x, T=T, path="fast"), interp.run(x, T=T, path="fast")
    finally:
        interp.skipping, interp.skip_paths = True, {}


@pytest.mark.parametrize("static", [True, False], ids=["static", "frames"])
@pytest.mark.parametrize("epilogue", ["f32", "f64", "i64"], ids=["f32-epi", "f64-epi", "i64-epi"])
@pytest.mark.parametrize("big_threshold", [False, True], ids=["f32-lif", "i64-lif"])
def test_gated_program_every_path_equals_the_oracle(static, epilogue, big_threshold):
    program = gated_program(epilogue, big_threshold)
    interp = Interpreter(program)
    assert interp._fused == {"c1": program.node("l1")}  # the skipping paths are taken
    assert interp._torch["c1"]["epi"] == epilogue
    assert (not interp._torch["l1"]["f32"]) == big_threshold
    x = _inputs(static)
    T = 4 if static else None
    xt = np.broadcast_to(x[None], (4,) + x.shape) if static else x
    want = oracle(program, xt)
    env = want["env"]
    g = np.array(env["g1"])
    # the branches this program is for
    assert g[:, :, 2].sum() == 0 and g[:, :, :2].any()  # a channel never kept, others kept sometimes
    if not static:
        assert g[0].sum() == 0  # a step where no sample keeps any channel
    assert np.array(env["l1"])[:, :, 1].any()  # channel 1 spikes sometimes, and sometimes not ...
    clamped = [u for name, t, u, v, s in want["trace"] if v == 64 and not s and u >= (3 * 2 + 1) << (F - 1)]
    assert clamped, "... and sometimes rests at the top level ub with u past it: the clamp decides"

    ref = interp.run_all(x, T=T, path="reference")
    for name in ("g1", "c1", "l1", "p1", "fc"):
        assert np.array_equal(ref[name], np.array(env[name])), name
    counts = interp.last_counts
    assert counts.dense_macs == want["dense_macs"] and counts.sops == want["sops"]
    assert counts.per_node["l1"]["spikes"] == want["spikes"]["l1"]
    assert counts.neuron_updates == want["neuron_updates"]
    for skipping, path in [(False, "union"), (True, "union"), (True, "gather"), (True, "gather_in")]:
        fast, logits = _fast(interp, x, T, skipping, path)
        for name in ("g1", "l1", "p1", "fc"):
            assert np.array_equal(fast[name], np.array(env[name])), (skipping, path, name)
        assert np.array_equal(logits, np.array(env["fc"])), (skipping, path)


def edge_program() -> Program:
    """x [1, 2, 2] 8-bit pixels -> 2x2 sum pool (codes up to 1020: the float pool) -> flatten ->
    linear -> LIF on the single level {0} -> linear. Channel 0's current is 2^24 - 1000 + the pixel
    sum and its threshold 2^24 + 3: float32 would round the threshold to 2^24 + 4 and miss the
    spike of a pixel sum of exactly 1004."""
    arrays = {
        "w1": np.array([[1], [1]], np.int8),
        "M1": np.array([1, 3], np.int64),
        "B1": np.array([2**24 - 1000, -1500], np.int64),
        "V": np.array([2**24 + 3, 100], np.int64),
        "w2": np.array([[1, 0], [0, 1], [1, 1]], np.int8),
        "M2": np.array([1, 1, 1], np.int64),
        "B2": np.zeros(3, np.int64),
    }
    nodes = [
        _node("sumpool", "p", ["x"], kernel=2),
        _node("flatten", "f", ["p"]),
        _node("linear", "fc1", ["f"], weight="w1", M="M1", B="B1", shift=0, bits=2, max_code=1),
        _node("lif", "l", ["fc1"], V="V", tau_shift=0, lb=0, ub=0),
        _node("linear", "fc2", ["l"], weight="w2", M="M2", B="B2", shift=0, bits=2, max_code=1),
    ]
    return Program(
        input={"name": "x", "shape": [1, 2, 2], "bits": 8, "scale": 1 / 255, "max": 255},
        frac_bits=F,
        nodes=nodes,
        arrays=arrays,
    )


def test_pixel_sum_pool_and_a_threshold_past_float32():
    program = edge_program()
    x = np.array([[255, 255], [255, 239]])[None, None]  # pixel sum 1004: current 2^24 + 4 > V
    x = np.concatenate([x, x - 1, np.full_like(x, 200), np.full_like(x, 255)])  # sums 1004, 1000, 800, 1020
    want = oracle(program, np.broadcast_to(x[None], (3,) + x.shape))["env"]
    assert np.array(want["l"])[:, :, 0].tolist() == [[1, 0, 0, 1]] * 3
    assert np.array(want["p"])[0, :, 0, 0, 0].tolist() == [1004, 1000, 800, 1020]
    interp = Interpreter(program)
    for path in ("reference", "fast"):
        got = interp.run_all(x, T=3, path=path)
        for name in ("p", "fc1", "l", "fc2"):
            assert np.array_equal(got[name], np.array(want[name])), (path, name)


def test_gate_rounds_each_numerator_before_the_sum():
    """Two channels whose exp(-beta d) numerators differ before the rounding shift and are equal
    after it: the gate row ``E_1 - E_2`` is exactly 0 (kept), not negative."""
    lo = np.round(2**8 * np.exp(-0.25 * np.arange(4))).astype(np.int64)
    hi = np.round(2**8 * np.exp(-1.0 * np.arange(13))).astype(np.int64)
    assert (hi[5], lo[0], lo[1]) == (2, 256, 199)  # d = 20: (2*256 + 128) >> 8 = 2; d = 21: 526 >> 8 = 2
    arrays = {
        "A": np.array([[0, 1, -1], [0, -1, 1]], np.int64),
        "exp_hi": hi,
        "exp_lo": lo,
        "w": np.ones((2, 3, 1, 1), np.int8),
        "M": np.array([4, 4], np.int64),
        "B": np.zeros(2, np.int64),
        "V": np.array([20], np.int64),
        "w2": np.array([[1] * 32], np.int8),
        "M2": np.array([1], np.int64),
        "B2": np.zeros(1, np.int64),
    }
    lif = dict(V="V", tau_shift=1, lb=-1, ub=1, prior_channel=0, prior_channel_min=0, prior_spatial=0)
    nodes = [
        _node(
            "channel_gate", "g", ["x"], A="A", exp_hi="exp_hi", exp_lo="exp_lo", lo_bits=2, exp_frac_bits=8
        ),
        _node(
            "conv",
            "c",
            ["x"],
            weight="w",
            M="M",
            B="B",
            shift=0,
            kernel=1,
            stride=1,
            padding=0,
            bits=2,
            max_code=1,
        ),
        _node("lif_pruned", "l", ["c", "g"], prior_spatial_level=0, **lif),
        _node("flatten", "f", ["l"]),
        _node("linear", "fc", ["f"], weight="w2", M="M2", B="B2", shift=0, bits=2, max_code=1),
    ]
    program = Program(
        input={"name": "x", "shape": [3, 4, 4], "bits": 2, "scale": 1 / 3, "max": 3},
        frac_bits=F,
        nodes=nodes,
        arrays=arrays,
    )
    x = np.zeros((1, 3, 4, 4), np.int64)
    x[0, 0].flat[:16] = [2] * 14 + [1] * 2  # channel sums 30, 9, 10: d = 0, 21, 20
    x[0, 1].flat[:9] = 1
    x[0, 2].flat[:10] = 1
    want = oracle(program, np.broadcast_to(x[None], (2,) + x.shape))["env"]
    assert want["g"] == [[[1, 1]]] * 2
    interp = Interpreter(program)
    for path in ("reference", "fast"):
        got = interp.run_all(x, T=2, path=path)
        for name in ("g", "l", "fc"):
            assert np.array_equal(got[name], np.array(want[name])), (path, name)


def test_predict_and_evaluate_against_the_oracle():
    program = gated_program("f32", False)
    interp = Interpreter(program)
    x = _inputs(static=True)
    T = 3
    want = oracle(program, np.broadcast_to(x[None], (T,) + x.shape))
    logits = np.array(want["env"]["fc"])  # [T, B, 4]
    pred = [max(range(4), key=lambda c, b=b: (logits[:, b, c].sum(), -c)) for b in range(x.shape[0])]
    for path in ("fast", "reference"):
        assert interp.predict(x, T=T, path=path).tolist() == pred
    labels = np.array(pred)
    labels[1] = (labels[1] + 1) % 4  # one wrong: accuracy 3/4
    res = interp.evaluate(x, labels, T=T, batch_size=3, path="reference")  # batches of 3 and 1
    assert res["accuracy"] == 0.75 and res["samples"] == 4
    assert res["ops"]["dense_macs"] == want["dense_macs"] and res["ops"]["sops"] == want["sops"]
    assert res["ops"]["neuron_updates"] == want["neuron_updates"]
    fast = interp.evaluate(x, labels, T=T, batch_size=3)
    assert fast["accuracy"] == 0.75 and fast["samples"] == 4 and "ops" not in fast


def test_exact_math_switches_off_cudnn_and_tf32_and_restores_them():
    interp = Interpreter.__new__(Interpreter)
    interp.device = torch.device("cuda")
    before = (torch.backends.cudnn.enabled, torch.backends.cuda.matmul.allow_tf32)
    try:
        for tf32 in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            with interp._exact_math():
                assert not torch.backends.cudnn.enabled and not torch.backends.cudnn.allow_tf32
                assert not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.enabled == before[0]
            assert torch.backends.cuda.matmul.allow_tf32 == tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[1]


@pytest.mark.parametrize("acc_dtype", [torch.float32, torch.float64])
def test_float64_epilogue_equals_int64_right_shift(acc_dtype):
    """The float64 epilogue is the int64 one, ``(acc*M + B + R) >> S``, whenever the bound is
    below 2^53, including values one below a multiple of 2^S, where float32 would round up."""
    from spquant.deploy.interpreter import _requantize

    r = np.random.RandomState(3)
    S = 30
    acc_max = 2**23 - 1 if acc_dtype == torch.float32 else 2**20
    acc = r.randint(-acc_max, acc_max + 1, size=(64, 5, 3, 3)).astype(np.int64)
    M = r.randint(1, 2**28, size=5).astype(np.int64)
    B = r.randint(-(2**40), 2**40, size=5).astype(np.int64)
    acc[0, :, 0, 0] = 1  # one below a multiple of 2^S: B + R = -M - 1 (mod 2^S) for these
    B = B - ((M + B + (1 << (S - 1)) + 1) % (1 << S))
    BR = B + (1 << (S - 1))
    assert (np.abs(acc) * M.max() + np.abs(BR).max()).max() < 2**53
    want = (acc * M.reshape(1, -1, 1, 1) + BR.reshape(1, -1, 1, 1)) >> S
    assert (((M + BR) % (1 << S)) == (1 << S) - 1).all()
    Ms = torch.from_numpy(M.astype(np.float64) * 2.0**-S).view(1, -1, 1, 1)
    BRs = torch.from_numpy(BR.astype(np.float64) * 2.0**-S).view(1, -1, 1, 1)
    got = _requantize(torch.from_numpy(acc).to(acc_dtype), "f64", Ms, BRs, S)
    assert got.dtype == torch.float64
    assert np.array_equal(got.numpy().astype(np.int64), want)
