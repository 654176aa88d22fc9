"""The integer program: its node ops (one table: attributes, arrays, inputs, bound analysis), the
:class:`Program` container and :func:`analyze` (docs/method.md#integer-deployment).

A :class:`Program` is a flat list of nodes over named tensors plus integer arrays, written by
:func:`spquant.deploy.fold.fold_model`; the deploy simulation (:mod:`spquant.deploy.sim`), the
integer interpreter (:mod:`spquant.deploy.interpreter`) and the export targets
(:mod:`spquant.deploy.targets`) all consume the same program, so they cannot disagree about the
arithmetic. :data:`OPS` is the one table of node ops: a new op is one entry there (its integer
attributes with their ranges, its arrays, its number of inputs, its bound analysis) plus its
arithmetic in the interpreter and the simulation.

Fixed-point convention (``F`` fractional bits, default 16): a *current* tensor holds integers
``I_fx ~= I * 2^F``. Every node's semantics is integer-exact:

``conv`` / ``linear``   ``acc = sum(w_code * x_code)`` (exact integer),
                        ``I_fx = (acc * M[c] + B[c] + R) >> S`` with ``R = 2^(S-1)`` if ``S > 0``
                        else 0 (round half up, arithmetic shift = floor). ``M`` folds the weight
                        scale, the input scale (1/255 for uint8 pixels, 1/4 after a 2x2 sum pool)
                        and the BatchNorm multiplier; ``B`` folds BN shift and any bias.
``scale_current``       ``I_fx = x * K`` (identity residual shortcut: spikes times ``2^F``).
``add``                 ``I_fx = a + b`` (residual add in fixed point).
``lif``                 ``u = (m << F) >> k + I_fx`` (leak tau = 2^-k as an arithmetic shift, exact),
                        ``s = u > V[c]`` (strict), ``m = 0 if s else clamp((u + 2^(F-1)) >> F, lb, ub)``.
``sumpool``             sum over k x k windows (the 1/k^2 goes into the next layer's ``M``).
``maxpool``             max over k x k windows (on spikes: a logical OR; the scale is unchanged).
``gsumpool``            sum over all positions, output [B, C] (global average pool, 1/HW folded).
``flatten``             [B, C, H, W] -> [B, C*H*W].
``channel_gate``        learned channel gate in integer form (docs/deploy.md, "Pruning"):
                        ``g = (A @ E(max cnt - cnt) >= 0)`` from per-channel input sums ``cnt``.
                        ``A`` may have one more column than the input has channels: the summed
                        columns of channels removed as silent (:mod:`spquant.deploy.compact`),
                        read with a count of 0.
``lif_pruned``          ``lif`` whose current is multiplied by the gate (every step) and by the
                        membrane prior (t > 0: ``sum_hw m >= P`` per channel, ``m > L`` per neuron).

The last node's output is the integer logits (fixed point, ``F`` fractional bits) per step;
prediction = argmax of the sum over T. For a detector (``meta["detection"]``) the last node is the
1x1 head convolution; the sum over T of its outputs divided by ``T * 2^F`` is the float head output
that box decoding reads (see :mod:`spquant.deploy.detection`).

The only float rounding is the input encoding (:meth:`Program.encode_input`), and the export
itself (computing ``M``, ``B``, ``V`` from float parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from spquant.errors import DeployError

__all__ = ["OPS", "OpSpec", "Program", "DeployError", "analyze", "input_encoding", "INT64_LIMIT"]

INT64_LIMIT = 2**62  # every intermediate must stay below this in magnitude (margin under 2^63)


@dataclass
class Program:
    """An integer program: input spec, fixed-point fraction bits, nodes and integer arrays."""

    input: dict  # {"name", "shape": [C, H, W], "bits", "scale", "max"}
    frac_bits: int
    nodes: list[dict]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.nodes[-1]["output"]

    def encode_input(self, x) -> np.ndarray:
        """Float input (e.g. pixel/255) -> integer codes: the ONLY float rounding of deployment.

        ``codes = clamp(floor(x / scale + 0.5), 0, max)`` as int64 (same shape as ``x``).
        """
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float64)
        codes = np.floor(x / self.input["scale"] + 0.5)
        return np.clip(codes, 0, self.input["max"]).astype(np.int64)

    def node(self, name: str) -> dict:
        for n in self.nodes:
            if n["name"] == name:
                return n
        raise KeyError(name)

    def consumers(self) -> dict[str, list[dict]]:
        """Tensor name -> the nodes that read it, in program order."""
        users: dict[str, list[dict]] = {}
        for n in self.nodes:
            for name in n["inputs"]:
                users.setdefault(name, []).append(n)
        return users

    def weight_nodes(self) -> list[dict]:
        return [n for n in self.nodes if n["op"] in ("conv", "linear")]

    def weight_params(self) -> int:
        return int(sum(self.arrays[n["weight"]].size for n in self.weight_nodes()))

    def summary(self) -> str:
        info = analyze(self)
        lines = [
            f"input {self.input['shape']} codes 0..{self.input['max']} (scale {self.input['scale']:.6g}), F={self.frac_bits}"
        ]
        for n in self.nodes:
            a = info[n["output"]]
            extra = ""
            if n["op"] in ("conv", "linear"):
                extra = f" w{n['bits']}b S={n['shift']} acc<={a['acc_max']} path={a['path']}"
            lines.append(f"{n['name']:>16s} {n['op']:<13s} -> {tuple(a['shape'])} |x|<={a['max']}{extra}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# node ops: one bound analysis per op, and the table
# ------------------------------------------------------------------------------------------------
def _bounds_affine(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    w = program.arrays[n["weight"]]
    M = program.arrays[n["M"]].astype(np.int64)
    B = program.arrays[n["B"]].astype(np.int64)
    cout = w.shape[0]
    if M.shape != (cout,) or B.shape != (cout,):
        raise DeployError(f"node {n['name']!r}: M/B shapes {M.shape}/{B.shape} != ({cout},)")
    if n["op"] == "conv":
        c, h, wd = x["shape"]
        k, st, p = n["kernel"], n["stride"], n["padding"]
        if w.shape[1:] != (c, k, k):
            raise DeployError(
                f"node {n['name']!r}: weight shape {w.shape} does not match input channels {c}, kernel {k}"
            )
        ho, wo = (h + 2 * p - k) // st + 1, (wd + 2 * p - k) // st + 1
        if ho < 1 or wo < 1:
            raise DeployError(f"node {n['name']!r}: empty output {ho}x{wo}")
        shape = [cout, ho, wo]
    else:
        if len(x["shape"]) != 1 or w.shape[1] != x["shape"][0]:
            raise DeployError(f"node {n['name']!r}: weight {w.shape} vs input {x['shape']}")
        shape = [cout]
    sum_abs = np.abs(w.reshape(cout, -1).astype(np.int64)).sum(1)
    acc_max = int(sum_abs.max(initial=0)) * x["max"]
    S = int(n["shift"])
    prod_max = acc_max * int(np.abs(M).max(initial=0)) + int(np.abs(B).max(initial=0)) + (1 << S)
    if prod_max >= INT64_LIMIT:
        raise DeployError(f"node {n['name']!r}: acc*M+B bound {prod_max} overflows int64")
    if acc_max < 2**24:
        path = "f32"
    elif acc_max < 2**53:
        path = "f64"
    else:
        raise DeployError(f"node {n['name']!r}: accumulator bound {acc_max} too large for exact float paths")
    return {
        "shape": shape,
        "max": (prod_max >> S) + 1,
        "kind": "cur",
        "acc_max": acc_max,
        "prod_max": prod_max,
        "path": path,
    }


def _bounds_scale_current(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    return {"shape": list(x["shape"]), "max": x["max"] * abs(int(n["K"])), "kind": "cur"}


def _bounds_add(program: Program, n: dict, ins: list[dict]) -> dict:
    a, b = ins
    if a["shape"] != b["shape"]:
        raise DeployError(f"node {n['name']!r}: add of shapes {a['shape']} and {b['shape']}")
    return {"shape": list(a["shape"]), "max": a["max"] + b["max"], "kind": "cur"}


def _bounds_lif(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    F = program.frac_bits
    if n["op"] == "lif_pruned" and len(ins) == 2:
        if ins[1].get("kind") != "gate" or ins[1]["shape"] != [x["shape"][0]]:
            raise DeployError(
                f"node {n['name']!r}: second input must be a gate over {x['shape'][0]} channels"
            )
    elif len(ins) != 1:
        raise DeployError(
            f"node {n['name']!r}: {n['op']} takes 1 input"
            + (" (or 2 with a gate)" if n["op"] == "lif_pruned" else "")
        )
    lb, ub = int(n["lb"]), int(n["ub"])
    V = program.arrays[n["V"]]
    if V.shape not in ((1,), (x["shape"][0],)):
        raise DeployError(f"node {n['name']!r}: threshold shape {V.shape} vs channels {x['shape'][0]}")
    umax = max(abs(lb), abs(ub)) * (1 << F) + x["max"]
    if umax + int(np.abs(V).max()) >= INT64_LIMIT:
        raise DeployError(f"node {n['name']!r}: membrane bound overflows int64")
    return {"shape": list(x["shape"]), "max": 1, "kind": "act", "u_max": umax}


def _bounds_channel_gate(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    A = program.arrays[n["A"]]
    hi, lo = program.arrays[n["exp_hi"]], program.arrays[n["exp_lo"]]
    if len(x["shape"]) != 3 or A.ndim != 2 or A.shape[1] not in (x["shape"][0], x["shape"][0] + 1):
        raise DeployError(f"node {n['name']!r}: gate matrix {A.shape} vs input {x['shape']}")
    D = x["max"] * x["shape"][1] * x["shape"][2]
    kb, fe = int(n["lo_bits"]), int(n["exp_frac_bits"])
    if lo.shape != (1 << kb,) or hi.shape[0] < (D >> kb) + 1:
        raise DeployError(f"node {n['name']!r}: exp tables {hi.shape}/{lo.shape} do not cover 0..{D}")
    for tab in (hi, lo):
        if tab.size and (tab.min() < 0 or tab.max() > (1 << fe)):
            raise DeployError(f"node {n['name']!r}: exp table values outside [0, 2^{fe}]")
    z_max = int(np.abs(A).astype(np.int64).sum(1).max(initial=0)) * (1 << fe)
    if z_max >= 2**53:
        raise DeployError(f"node {n['name']!r}: gate sum bound {z_max} too large")
    return {"shape": [A.shape[0]], "max": 1, "kind": "gate", "z_max": z_max}


def _bounds_sumpool(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    c, h, wd = x["shape"]
    k = int(n["kernel"])
    if h % k or wd % k:
        raise DeployError(f"node {n['name']!r}: {h}x{wd} not divisible by pool {k}")
    return {"shape": [c, h // k, wd // k], "max": x["max"] * k * k, "kind": "act"}


def _bounds_maxpool(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    c, h, wd = x["shape"]
    k = int(n["kernel"])
    if h % k or wd % k:
        raise DeployError(f"node {n['name']!r}: {h}x{wd} not divisible by pool {k}")
    if x.get("kind") != "act":
        raise DeployError(f"node {n['name']!r}: max pooling applies to activations (spikes), not currents")
    return {"shape": [c, h // k, wd // k], "max": x["max"], "kind": "act"}


def _bounds_gsumpool(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    c, h, wd = x["shape"]
    return {"shape": [c], "max": x["max"] * h * wd, "kind": "act"}


def _bounds_flatten(program: Program, n: dict, ins: list[dict]) -> dict:
    x = ins[0]
    return {"shape": [int(np.prod(x["shape"]))], "max": x["max"], "kind": "act"}


@dataclass(frozen=True)
class OpSpec:
    """What a program node of one op carries and how its output is bounded.

    ``ints``: integer attributes with their allowed ``(lo, hi)`` ranges (checked when a file loads);
    ``arrays``: attributes naming integer arrays of the program; ``arity``: allowed input counts;
    ``bounds(program, node, inputs)``: the output's shape (per sample), magnitude bound ``max`` and
    ``kind`` ('act', 'cur' or 'gate'), from the inputs' — raising :class:`DeployError` when the
    node is inconsistent or a bound could overflow.
    """

    ints: dict[str, tuple[int, int]]
    bounds: Callable[[Program, dict, list[dict]], dict]
    arrays: tuple[str, ...] = ()
    arity: tuple[int, ...] = (1,)


OPS: dict[str, OpSpec] = {
    "conv": OpSpec(
        ints={
            "bits": (1, 16),
            "max_code": (1, 32767),
            "shift": (0, 62),
            "kernel": (1, 64),
            "stride": (1, 64),
            "padding": (0, 64),
        },
        arrays=("weight", "M", "B"),
        bounds=_bounds_affine,
    ),
    "linear": OpSpec(
        ints={"bits": (1, 16), "max_code": (1, 32767), "shift": (0, 62)},
        arrays=("weight", "M", "B"),
        bounds=_bounds_affine,
    ),
    "scale_current": OpSpec(
        ints={"K": (-(2**40), 2**40)},
        bounds=_bounds_scale_current,
    ),
    "add": OpSpec(
        ints={},
        arity=(2,),
        bounds=_bounds_add,
    ),
    "lif": OpSpec(
        ints={"tau_shift": (0, 30), "lb": (-(2**15), 0), "ub": (0, 2**15)},
        arrays=("V",),
        bounds=_bounds_lif,
    ),
    "lif_pruned": OpSpec(
        ints={
            "tau_shift": (0, 30),
            "lb": (-(2**15), 0),
            "ub": (0, 2**15),
            "prior_channel": (0, 1),
            "prior_channel_min": (-(2**40), 2**40),
            "prior_spatial": (0, 1),
            "prior_spatial_level": (-(2**15) - 1, 2**15),
        },
        arrays=("V",),
        arity=(1, 2),
        bounds=_bounds_lif,
    ),
    "channel_gate": OpSpec(
        ints={"lo_bits": (0, 31), "exp_frac_bits": (1, 30)},
        arrays=("A", "exp_hi", "exp_lo"),
        bounds=_bounds_channel_gate,
    ),
    "sumpool": OpSpec(
        ints={"kernel": (1, 64)},
        bounds=_bounds_sumpool,
    ),
    "maxpool": OpSpec(
        ints={"kernel": (1, 64)},
        bounds=_bounds_maxpool,
    ),
    "gsumpool": OpSpec(
        ints={},
        bounds=_bounds_gsumpool,
    ),
    "flatten": OpSpec(
        ints={},
        bounds=_bounds_flatten,
    ),
}


# ------------------------------------------------------------------------------------------------
# analysis: shapes and integer bounds (used by every consumer, and to validate loaded files)
# ------------------------------------------------------------------------------------------------
def analyze(program: Program) -> dict[str, dict]:
    """Shapes (per sample) and magnitude bounds of every tensor, and the exact-arithmetic path.

    For ``conv``/``linear`` the accumulator bound is ``max_c sum|w_c| * max|x|`` — a bound on every
    partial sum in any summation order — and ``path`` is ``'f32'`` when it is below 2^24 (float32
    holds every partial sum exactly), ``'f64'`` below 2^53, else an error. Raises
    :class:`DeployError` when any bound exceeds the int64 budget.
    """
    info: dict[str, dict] = {
        program.input["name"]: {
            "shape": list(program.input["shape"]),
            "max": int(program.input["max"]),
            "kind": "act",
        }
    }
    for n in program.nodes:
        try:
            ins = [info[i] for i in n["inputs"]]
        except KeyError as e:
            raise DeployError(f"node {n['name']!r}: unknown input {e.args[0]!r}") from None
        spec = OPS.get(n["op"])
        if spec is None:
            raise DeployError(f"node {n['name']!r}: unknown op {n['op']!r}")
        out = spec.bounds(program, n, ins)
        if out["kind"] == "act" and out["max"] >= 2**24:
            raise DeployError(
                f"node {n['name']!r}: activation bound {out['max']} exceeds 2^24 (float32-exact pooling)"
            )
        if out["max"] >= INT64_LIMIT:
            raise DeployError(f"node {n['name']!r}: value bound overflows int64")
        info[n["output"]] = out
    return info


def input_encoding(config) -> dict:
    """How a run's inputs become integer codes: shape (C, H, W), code bits and the float value of code 1.

    Static images are uint8 pixels with scale 1/255 (as in training); event frames are integer
    counts with scale 1. Raises :class:`DeployError` for inputs with no exact integer form: a run
    trained on area-resized event frames (fractional counts).
    """
    from spquant.train.data import integer_inputs

    shape = (config.model.in_channels, *config.model.input)
    if config.data.encoding == "direct":
        return {"input_shape": shape, "input_bits": 8, "input_scale": 1 / 255}
    if not integer_inputs(config):
        raise DeployError(
            f"this run was trained on area-resized event frames (data.resize={config.data.resize!r}: fractional "
            "counts), which integer inputs cannot represent; train with data.resize='crop' or 'pad' (integer counts) "
            "for integer deployment"
        )
    return {"input_shape": shape, "input_bits": 8, "input_scale": 1.0}
