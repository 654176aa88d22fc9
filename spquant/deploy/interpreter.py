"""Integer interpreter of a folded :class:`~spquant.deploy.fold.Program` (docs/method.md#integer-deployment).

Two paths with identical results:

* ``reference`` — plain numpy ``int64``, written for clarity: a convolution is a loop over the
  kernel taps of integer multiply-accumulates; every node follows the rule in
  :mod:`spquant.deploy.fold` literally. It counts the operations it executes.
* ``fast`` — torch. Convolutions/linears run in float32 holding integers when the per-layer bound
  (``max_c sum|w_c| * max|x|``, see :func:`~spquant.deploy.fold.analyze`) proves every partial sum
  is below 2^24 (float32 represents every integer up to 2^24 exactly, so any summation order gives
  the exact integer), in float64 below 2^53, otherwise the program is rejected at load. Everything
  after the accumulator (multiplier, shift, leak, threshold, reset, clamp) runs in integer tensors
  (int32 where the bound proves it fits, else int64). A static input (the same image every step)
  runs through the first layer once. Bit-identical to the reference by construction.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as Fn

from spquant.deploy.program import DeployError, Program, analyze

__all__ = ["Interpreter", "OpCounts", "lif_step_int", "lif_seq_fast", "requant"]


# ------------------------------------------------------------------------------------------------
# the integer rules, once, in numpy (also used by the exhaustive tests)
# ------------------------------------------------------------------------------------------------
def requant(acc: np.ndarray, M: np.ndarray, B: np.ndarray, S: int) -> np.ndarray:
    """``(acc * M + B + R) >> S`` with R = 2^(S-1) (round half up), per channel on axis 1."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    r = (1 << (S - 1)) if S > 0 else 0
    return (acc.astype(np.int64) * M.reshape(shape) + (B.reshape(shape) + r)) >> S


def lif_step_int(m: np.ndarray, cur: np.ndarray, V: np.ndarray, F: int, tau_shift: int, lb: int, ub: int):
    """One integer LIF step: returns (spikes {0,1}, new membrane codes) as int64."""
    u = ((m.astype(np.int64) << F) >> tau_shift) + cur
    s = u > V
    q = np.clip((u + (1 << (F - 1))) >> F, lb, ub)
    return s.astype(np.int64), np.where(s, 0, q).astype(np.int64)


def gate_int(
    counts: np.ndarray, A: np.ndarray, exp_hi: np.ndarray, exp_lo: np.ndarray, lo_bits: int, fe: int
) -> np.ndarray:
    """Integer channel gate from per-channel input sums ``counts`` [N, C_in] (int64):
    ``d = max_c counts - counts``, ``E = (exp_hi[d >> k] * exp_lo[d & (2^k - 1)] + 2^(fe-1)) >> fe``
    (the softmax numerator exp(-beta d) in fixed point), gate ``= (E @ A.T >= 0)`` [N, C_out]."""
    if A.shape[1] == counts.shape[1] + 1:  # the column of removed silent channels: count 0
        counts = np.concatenate([counts, np.zeros((counts.shape[0], 1), dtype=counts.dtype)], axis=1)
    d = counts.max(axis=1, keepdims=True) - counts
    E = (exp_hi[d >> lo_bits] * exp_lo[d & ((1 << lo_bits) - 1)] + (1 << (fe - 1))) >> fe
    return (E @ A.T >= 0).astype(np.int64)


def prior_keep_int(m: np.ndarray, node: dict) -> np.ndarray:
    """Membrane-prior keep mask from the stored codes m [B, C, ...] (int64, 1 = update)."""
    keep = np.ones(m.shape, dtype=np.int64)
    if node["prior_channel"]:
        sums = m.reshape(m.shape[0], m.shape[1], -1).sum(-1)
        keep = keep * (sums >= node["prior_channel_min"]).reshape(sums.shape + (1,) * (m.ndim - 2))
    if node["prior_spatial"]:
        keep = keep * (m > node["prior_spatial_level"])
    return keep


def lif_seq_fast(
    cur: torch.Tensor,
    V: torch.Tensor,
    F: int,
    tau_shift: int,
    lb: int,
    ub: int,
    steps: int | None = None,
    m0: torch.Tensor | None = None,
):
    """The fast path's LIF over a sequence of currents [T, ...] (or one static step [...] repeated
    ``steps`` times), float32 or integer tensors holding integers. Returns (spikes uint8 [T, ...],
    last membrane codes int8).

    The membrane is kept as int8 codes; the quantized next state is computed with comparisons
    against integer boundaries instead of a shift and a clamp:
    ``clamp((u + 2^(F-1)) >> F, lb, ub) = #{l in 1..ub : u >= l 2^F - 2^(F-1)} - #{l in lb..-1 : u < (l+1) 2^F - 2^(F-1)}``.
    In float32 every value involved is an integer below 2^24 (the caller proves it), so every
    operation is exact.
    """
    static = steps is not None
    steps = steps if static else cur.shape[0]
    shape = tuple(cur.shape if static else cur.shape[1:])
    if static:
        cur = cur.contiguous()
        out = torch.empty((steps,) + shape, dtype=torch.bool, device=cur.device)
    else:  # keep the input's memory layout (e.g. channels_last from the convolution)
        out = torch.empty_like(cur, dtype=torch.bool)
    m = torch.zeros_like(out[0], dtype=torch.int8) if m0 is None else m0.to(torch.int8)
    leak = 1 << (F - tau_shift)
    one, half = 1 << F, 1 << (F - 1)
    up = [l * one - half for l in range(1, ub + 1)]
    # when every threshold is >= ub 2^F - 2^(F-1), a spiking neuron has all "up" terms 1 and all
    # "down" terms 0 (next state ub before the reset), so the reset is a subtraction of ub * s
    reset_by_sub = bool(ub > 0 and (V >= ub * one - half).all())
    down = [(l + 1) * one - half for l in range(lb, 0)]
    for t in range(steps):
        u = torch.add(cur if static else cur[t], m, alpha=leak)
        s = torch.gt(u, V, out=out[t])
        nxt = None
        for bound in up:  # fresh bool tensors reinterpreted as int8 0/1: no extra pass
            g = torch.ge(u, bound).view(torch.int8)
            nxt = g if nxt is None else nxt.add_(g)
        for bound in down:
            g = torch.lt(u, bound).view(torch.int8)
            nxt = g.neg_() if nxt is None else nxt.sub_(g)
        if nxt is None:  # grid {0}
            nxt = torch.zeros_like(m)
        m = nxt.sub_(s.view(torch.int8), alpha=ub) if reset_by_sub else nxt.masked_fill_(s, 0)
    return out.view(torch.uint8), m


def _lif_pruned_fast(
    cur: torch.Tensor, V: torch.Tensor, F: int, n: dict, gate: torch.Tensor | None
) -> torch.Tensor:
    """LIF with the learned gate and the membrane prior (the current is zeroed where skipped).
    ``cur`` [T, B, C, ...] float32 or int64 holding integers; ``gate`` [T, B, C] bool or None."""
    T = cur.shape[0]
    lb, ub, k = int(n["lb"]), int(n["ub"]), int(n["tau_shift"])
    half = 1 << (F - 1)
    extra = (1,) * (cur.dim() - 3)
    m = torch.zeros(cur.shape[1:], dtype=torch.int64, device=cur.device)
    out = torch.empty(cur.shape, dtype=torch.bool, device=cur.device)
    for t in range(T):
        i_t = cur[t]
        keep = None
        if gate is not None:
            keep = gate[t].reshape(*gate[t].shape, *extra)
        if t > 0:
            if n["prior_channel"]:
                c = (m.reshape(m.shape[0], m.shape[1], -1).sum(-1) >= n["prior_channel_min"]).reshape(
                    m.shape[0], m.shape[1], *extra
                )
                keep = c if keep is None else keep & c
            if n["prior_spatial"]:
                sp = m > n["prior_spatial_level"]
                keep = sp if keep is None else keep & sp
        if keep is not None:
            i_t = i_t * keep  # exact: multiplying integers by 0/1
        u = i_t.to(torch.int64) + (m << (F - k) if F >= k else m)
        s = torch.gt(u, V.to(torch.int64), out=out[t])
        m = ((u + half) >> F).clamp_(lb, ub).masked_fill_(s, 0)
    return out.view(torch.uint8)


def _requantize(acc, epi: str, scale, offset, shift: int) -> torch.Tensor:
    """``(acc * M + B + R) >> S`` per output channel, exactly, in the cheapest arithmetic the
    bounds allow (``epi``): float32 or float64 as ``floor(acc * scale + offset)`` with ``scale`` =
    M 2^-S and ``offset`` = (B + R) 2^-S in that type, exact when every intermediate is an integer
    (times a power of two) below 2^24 or 2^53 (float products vectorize on CPUs, int64 ones do
    not); else int64 with ``scale`` = M and ``offset`` = B + R."""
    if epi == "f32":
        return acc.mul_(scale).add_(offset).floor_()
    if epi == "f64":
        return acc.to(torch.float64).mul_(scale).add_(offset).floor_()
    return (acc.to(torch.int64) * scale + offset) >> shift


def _layout(t: torch.Tensor) -> torch.Tensor:
    """4-D tensors in channels_last memory format (a layout change only: values are untouched)."""
    if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


@dataclass
class OpCounts:
    """Operations executed by the reference path (per run, summed over T and the batch)."""

    dense_macs: int = 0  # fan-in MACs of every output element (the dense cost)
    sops: int = 0  # accumulations with a nonzero input AND a nonzero weight (event-driven adds)
    requant_mults: int = 0  # one multiply + add + shift per output current
    neuron_updates: int = 0  # LIF state updates executed
    skipped_channels: int = 0  # output channel-steps (per sample) skipped by gates/priors (0 without pruning)
    kept_macs: int = 0  # fan-in MACs of the neuron-steps that received current (the pruned cost)
    per_node: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "dense_macs",
                "kept_macs",
                "sops",
                "requant_mults",
                "neuron_updates",
                "skipped_channels",
            )
        }


def _conv_ref(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Integer convolution: x [N, C, H, W] int64, w [O, C, k, k] -> [N, O, Ho, Wo] int64."""
    N, C, H, W = x.shape
    O, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    acc = np.zeros((N, O, Ho, Wo), dtype=np.int64)
    w = w.astype(np.int64)
    for di in range(k):
        for dj in range(k):
            patch = xp[:, :, di : di + stride * Ho : stride, dj : dj + stride * Wo : stride]  # [N, C, Ho, Wo]
            acc += np.einsum("nchw,oc->nohw", patch, w[:, :, di, dj])
    return acc


class Interpreter:
    """Runs a :class:`Program` on integer input codes ``[T, B, C, H, W]`` (or ``[B, C, H, W]`` + T).

    ``run(codes, T=None, path='fast')`` returns the integer logits ``[T, B, classes]`` (int64
    numpy); ``run_all`` returns every named tensor too (for parity checks). ``predict`` =
    argmax of the sum over T.

    ``device``: where the fast path computes (``'cpu'`` default, or e.g. ``'cuda'``); results come
    back as CPU arrays either way. On CUDA the convolutions and matrix products run without cuDNN and
    TF32 (cuBLAS GEMMs), so that every float operation on integers stays exact as on the CPU.
    """

    def __init__(self, program: Program, device: str | torch.device = "cpu"):
        self.program = program
        self.device = torch.device(device)
        self.info = analyze(program)  # raises DeployError on any unprovable bound
        self.F = program.frac_bits
        self.last_counts: OpCounts | None = None
        self._torch = {}
        # skipping: a gated conv whose current feeds only a pruned LIF is computed inside the LIF's
        # time loop, for the channels the gate and the channel prior keep (see _skip_conv_lif)
        self.skipping = True
        self.skip_paths: dict[str, str] = {}  # conv name -> 'union' | 'gather' | 'gather_in' (calibrate)
        users = program.consumers()
        self._fused: dict[str, dict] = {}  # conv output name -> the lif_pruned node that consumes it
        for n in program.nodes:
            u = users.get(n["output"], [])
            if (
                n["op"] == "conv"
                and len(u) == 1
                and u[0]["op"] == "lif_pruned"
                and u[0]["inputs"][0] == n["output"]
                and n["output"] != program.output
            ):
                self._fused[n["output"]] = u[0]
        self._conv_of = {
            self._fused[k]["name"]: n for n in program.nodes for k in [n["output"]] if k in self._fused
        }
        F = self.F
        # fan-in of the conv/linear node that produces each current (for the kept-MAC count)
        self._producer = {
            n["output"]: int(np.prod(program.arrays[n["weight"]].shape[1:]))
            for n in program.nodes
            if n["op"] in ("conv", "linear")
        }
        for n in program.nodes:
            out = self.info[n["output"]]
            if n["op"] in ("conv", "linear"):
                dt = torch.float32 if out["path"] == "f32" else torch.float64
                S = int(n["shift"])
                M = program.arrays[n["M"]].astype(np.int64)
                BR = program.arrays[n["B"]].astype(np.int64) + ((1 << (S - 1)) if S > 0 else 0)
                # float epilogue: (acc*M + B + R) * 2^-S then floor, exact when every value is an
                # integer (times a power of two) below 2^24 (float32) or 2^53 (float64)
                if dt == torch.float32 and out["prod_max"] < 2**24:
                    epi = "f32"
                else:
                    epi = "f64" if out["prod_max"] < 2**53 else "i64"
                if epi == "i64":
                    scale, offset = torch.from_numpy(M), torch.from_numpy(BR)
                else:
                    sdt = torch.float32 if epi == "f32" else torch.float64
                    scale = torch.from_numpy(M.astype(np.float64) * 2.0**-S).to(sdt)
                    offset = torch.from_numpy(BR.astype(np.float64) * 2.0**-S).to(sdt)
                self._torch[n["name"]] = {
                    "w": _layout(torch.from_numpy(program.arrays[n["weight"]].astype(np.float64)).to(dt)),
                    "dtype": dt,
                    "epi": epi,
                    "scale": scale,
                    "offset": offset,
                }
            elif n["op"] == "channel_gate":
                self._torch[n["name"]] = {
                    k: torch.from_numpy(program.arrays[n[k]].astype(np.int64))
                    for k in ("A", "exp_hi", "exp_lo")
                }
            elif n["op"] in ("lif", "lif_pruned"):
                V = program.arrays[n["V"]].astype(np.int64)
                lb, ub, k = int(n["lb"]), int(n["ub"]), int(n["tau_shift"])
                leak = 1 << (F - k)
                # currents outside [imin, imax] give the same spike and next state as the bound
                imax = int(V.max()) - lb * leak + 1
                imin = min((lb + 1) * (1 << F) - (1 << (F - 1)) - ub * leak - 1, int(V.min()) - ub * leak)
                span = max(abs(imin), abs(imax)) + max(abs(lb), abs(ub)) * leak + (1 << F)
                f32 = span < 2**24
                self._torch[n["name"]] = {
                    "V": torch.from_numpy(V).to(torch.float32 if f32 else torch.int64),
                    "f32": f32,
                    "imin": imin,
                    "imax": imax,
                    # a float32 current needs no saturation when u = I + m*leak stays below 2^24
                    "noclamp": self.info[n["inputs"][0]]["max"] + max(abs(lb), abs(ub)) * leak + (1 << F)
                    < 2**24,
                }
        for params in self._torch.values():
            for key, value in params.items():
                if isinstance(value, torch.Tensor):
                    params[key] = value.to(self.device)

    def _exact_math(self):
        """On CUDA: no cuDNN (its Winograd/FFT algorithms round) and no TF32, for the fast path."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.backends.cudnn.flags(enabled=False, allow_tf32=False))
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", previous)
        return stack

    # -- input handling ----------------------------------------------------------------------
    def _check_input(self, codes, T):
        x = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if not np.issubdtype(x.dtype, np.integer):
            if not np.all(np.floor(x) == x):
                raise DeployError(
                    "interpreter input must be integer codes; use program.encode_input(x) first"
                )
        shape = list(self.program.input["shape"])
        static = x.ndim == len(shape) + 1
        if static:
            if T is None:
                raise DeployError("a static [B, C, H, W] input needs T")
        elif x.ndim != len(shape) + 2:
            raise DeployError(f"input must be [T, B, {shape}] or [B, {shape}], got {x.shape}")
        if list(x.shape[-len(shape) :]) != shape:
            raise DeployError(f"input shape {x.shape} does not end with {shape}")
        if x.size and (x.min() < 0 or x.max() > self.program.input["max"]):
            raise DeployError(f"input codes must lie in [0, {self.program.input['max']}]")
        return x.astype(np.int64), static

    # -- reference path ----------------------------------------------------------------------
    def run_all_reference(self, codes, T: int | None = None) -> dict[str, np.ndarray]:
        x, static = self._check_input(codes, T)
        if static:
            x = np.broadcast_to(x[None], (T,) + x.shape)
        T, Bn = x.shape[:2]
        F = self.F
        arrays = self.program.arrays
        counts = OpCounts()
        env = {self.program.input["name"]: x}
        for n in self.program.nodes:
            op = n["op"]
            a = env[n["inputs"][0]]
            if op in ("conv", "linear"):
                w = arrays[n["weight"]].astype(np.int64)
                flat = a.reshape(T * Bn, *a.shape[2:])
                if op == "conv":
                    acc = _conv_ref(flat, w, n["stride"], n["padding"])
                    nz = _conv_ref(
                        (flat != 0).astype(np.int64), (w != 0).astype(np.int64), n["stride"], n["padding"]
                    )
                else:
                    acc = flat @ w.T
                    nz = (flat != 0).astype(np.int64) @ (w != 0).astype(np.int64).T
                out = requant(acc, arrays[n["M"]], arrays[n["B"]], int(n["shift"]))
                fan_in = int(np.prod(w.shape[1:]))
                c = {"dense_macs": acc.size * fan_in, "sops": int(nz.sum()), "requant_mults": acc.size}
                counts.dense_macs += c["dense_macs"]
                counts.sops += c["sops"]
                counts.requant_mults += c["requant_mults"]
                counts.per_node[n["name"]] = c
                y = out.reshape(T, Bn, *out.shape[1:])
            elif op == "scale_current":
                y = a * int(n["K"])
            elif op == "add":
                y = a + env[n["inputs"][1]]
            elif op == "channel_gate":
                cnt = a.reshape(T * Bn, a.shape[2], -1).sum(-1)
                g = gate_int(
                    cnt,
                    arrays[n["A"]].astype(np.int64),
                    arrays[n["exp_hi"]].astype(np.int64),
                    arrays[n["exp_lo"]].astype(np.int64),
                    int(n["lo_bits"]),
                    int(n["exp_frac_bits"]),
                )
                y = g.reshape(T, Bn, -1)
            elif op in ("lif", "lif_pruned"):
                V = arrays[n["V"]].astype(np.int64)
                V = V.reshape((-1,) + (1,) * (a.ndim - 3)) if V.size > 1 else V.reshape(())
                m = np.zeros(a.shape[1:], dtype=np.int64)
                y = np.zeros(a.shape, dtype=np.int64)
                gate = env[n["inputs"][1]] if len(n["inputs"]) > 1 else None
                skipped = 0
                kept = a.size
                for t in range(T):
                    i_t = a[t]
                    if op == "lif_pruned":
                        keep = np.ones(a.shape[1:], dtype=np.int64)
                        if gate is not None:
                            keep = keep * gate[t].reshape(gate[t].shape + (1,) * (a.ndim - 3))
                        if t > 0:
                            keep = keep * prior_keep_int(m, n)
                        i_t = i_t * keep
                        kept -= int((keep == 0).sum())
                        if a.ndim > 3:  # whole output channels skipped at this step
                            skipped += int(
                                (keep.reshape(keep.shape[0], keep.shape[1], -1).max(-1) == 0).sum()
                            )
                    y[t], m = lif_step_int(m, i_t, V, F, int(n["tau_shift"]), int(n["lb"]), int(n["ub"]))
                counts.neuron_updates += a.size
                counts.skipped_channels += skipped
                src = self._producer.get(n["inputs"][0])
                if src is not None and op == "lif_pruned":  # MACs of the neurons that did receive current
                    counts.kept_macs += kept * src
                elif src is not None:
                    counts.kept_macs += a.size * src
                counts.per_node[n["name"]] = {
                    "neuron_updates": a.size,
                    "spikes": int(y.sum()),
                    "gated_off_neuron_steps": a.size - kept,
                    "skipped_channel_steps": skipped,
                }
            elif op == "sumpool":
                k = int(n["kernel"])
                Tn, Bb, C, H, W = a.shape
                y = a.reshape(Tn, Bb, C, H // k, k, W // k, k).sum(axis=(4, 6))
            elif op == "maxpool":
                k = int(n["kernel"])
                Tn, Bb, C, H, W = a.shape
                y = a.reshape(Tn, Bb, C, H // k, k, W // k, k).max(axis=(4, 6))
            elif op == "gsumpool":
                y = a.sum(axis=(3, 4))
            elif op == "flatten":
                y = a.reshape(a.shape[0], a.shape[1], -1)
            else:  # pragma: no cover - analyze() rejects unknown ops
                raise DeployError(f"unknown op {op!r}")
            env[n["output"]] = y
        self.last_counts = counts
        return env

    # -- fast path ---------------------------------------------------------------------------
    @torch.no_grad()
    def run_all_fast(self, codes, T: int | None = None, keep_all: bool = True) -> dict[str, torch.Tensor]:
        with self._exact_math():
            return self._run_all_fast(codes, T, keep_all)

    def _run_all_fast(self, codes, T, keep_all):
        x, static = self._check_input(codes, T)
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if static:
            Bn = xt.shape[0]
        else:
            T, Bn = xt.shape[:2]
        F = self.F
        # a value is (tensor, static): static tensors have no T axis and stand for T equal steps
        env: dict[str, tuple[torch.Tensor, bool]] = {self.program.input["name"]: (xt, static)}
        last_use = {}
        index = {n["name"]: i for i, n in enumerate(self.program.nodes)}
        for i, n in enumerate(self.program.nodes):
            for name in n["inputs"]:
                last_use[name] = i
        if self.skipping:  # a deferred conv reads its input at the LIF that consumes it
            for lif_name, conv in self._conv_of.items():
                for name in conv["inputs"]:
                    last_use[name] = max(last_use[name], index[lif_name])
        for i, n in enumerate(self.program.nodes):
            op = n["op"]
            a, st = env[n["inputs"][0]]
            if (
                op == "lif_pruned"
                and self.skipping
                and n["name"] in self._conv_of
                and (keep_all or isinstance(a, tuple))
            ):
                gate = None
                if len(n["inputs"]) > 1:
                    g, stg = env[n["inputs"][1]]
                    gate = g.expand(T, *g.shape) if stg else g
                conv = self._conv_of[n["name"]]
                xin, stx = env[conv["inputs"][0]]
                env[n["output"]] = (self._skip_conv_lif(xin, stx, T, conv, n, gate), False)
                if not keep_all:
                    for name in n["inputs"]:
                        if last_use.get(name) == i and name != self.program.output:
                            env.pop(name, None)
                    for name in conv["inputs"]:
                        if last_use.get(name) == i and name != self.program.output:
                            env.pop(name, None)
                continue
            lead = a.shape[:1] if st else a.shape[:2]
            if op == "conv" and self.skipping and n["output"] in self._fused and not keep_all:
                y = (("deferred", a), st)  # computed by the pruned LIF that consumes it
            elif op in ("conv", "linear"):
                p = self._torch[n["name"]]
                flat = a.reshape(-1, *a.shape[len(lead) :])
                if op == "conv":  # channels_last: much faster oneDNN kernels for few channels
                    flat = flat.to(p["dtype"], memory_format=torch.channels_last)  # type and layout: one pass
                    acc = Fn.conv2d(flat, p["w"], stride=n["stride"], padding=n["padding"])
                    shape = (1, -1, 1, 1)
                else:
                    acc = flat.to(p["dtype"]) @ p["w"].T
                    shape = (1, -1)
                cur = _requantize(acc, p["epi"], p["scale"].view(shape), p["offset"].view(shape), n["shift"])
                y = (cur.reshape(*lead, *cur.shape[1:]), st)
            elif op == "scale_current":
                y = (a.to(torch.int64) * int(n["K"]), st)
            elif op == "add":
                b, stb = env[n["inputs"][1]]
                if st and not stb:
                    a = a.unsqueeze(0)
                if stb and not st:
                    b = b.unsqueeze(0)
                if a.dtype == b.dtype == torch.float32 and self.info[n["output"]]["max"] < 2**24:
                    y = (a + b, st and stb)
                else:
                    y = (a.to(torch.int64) + b.to(torch.int64), st and stb)
            elif op == "channel_gate":
                p = self._torch[n["name"]]
                cnt = (
                    a.reshape(*lead, a.shape[-3], -1).to(torch.float32).sum(-1).to(torch.int64)
                )  # exact: < 2^24
                cnt = cnt.reshape(-1, cnt.shape[-1])
                if p["A"].shape[1] == cnt.shape[1] + 1:  # removed silent channels: count 0
                    cnt = Fn.pad(cnt, (0, 1))
                d = cnt.max(dim=1, keepdim=True).values - cnt
                kb, fe = int(n["lo_bits"]), int(n["exp_frac_bits"])
                E = (p["exp_hi"][d >> kb] * p["exp_lo"][d & ((1 << kb) - 1)] + (1 << (fe - 1))) >> fe
                g = E.to(torch.float64) @ p["A"].to(torch.float64).T >= 0  # exact: |z| < 2^53 (analyze)
                y = (g.reshape(*lead, -1), st)
            elif op in ("lif", "lif_pruned"):
                p = self._torch[n["name"]]
                V = p["V"]
                V = V.view(-1, *([1] * (a.dim() - (2 if st else 3)))) if V.numel() > 1 else V.view(())
                if p["f32"]:
                    if a.dtype != torch.float32 or not p["noclamp"]:
                        a = a.clamp(p["imin"], p["imax"]).to(torch.float32)  # saturate: same results
                else:
                    a = a.to(torch.int64)
                if op == "lif_pruned":
                    gate = None
                    if len(n["inputs"]) > 1:
                        g, stg = env[n["inputs"][1]]
                        gate = g.expand(T, *g.shape) if stg else g
                    if st:
                        a = a.unsqueeze(0).expand(T, *a.shape)
                    out = _lif_pruned_fast(a, V, F, n, gate)
                else:
                    out, _ = lif_seq_fast(
                        a, V, F, int(n["tau_shift"]), int(n["lb"]), int(n["ub"]), steps=T if st else None
                    )
                y = (out, False)
            elif op == "sumpool":
                k = int(n["kernel"])
                flat = a.reshape(-1, *a.shape[len(lead) :])
                if flat.dtype == torch.uint8 and k * k * self.info[n["inputs"][0]]["max"] <= 255:
                    # spikes: a sum of k*k strided views stays exact in uint8, ~8x faster than a float pool
                    Ho, Wo = flat.shape[-2] // k, flat.shape[-1] // k
                    pooled = sum(
                        flat[..., i : i + k * Ho : k, j : j + k * Wo : k] for i in range(k) for j in range(k)
                    )
                else:  # window sums of small integers: exact in float32
                    pooled = Fn.avg_pool2d(flat.to(torch.float32), k, divisor_override=1)
                y = (pooled.reshape(*lead, *pooled.shape[1:]), st)
            elif op == "maxpool":
                k = int(n["kernel"])
                flat = a.reshape(-1, *a.shape[len(lead) :])
                if flat.dtype == torch.uint8:  # max_pool2d has no uint8 kernel
                    flat = flat.to(torch.float32)
                elif not flat.is_floating_point() and flat.device.type != "cpu":  # nor integer ones on CUDA
                    flat = flat.to(torch.float64)  # exact: |values| < 2^53 (analyze)
                pooled = Fn.max_pool2d(flat, k).to(a.dtype)  # a max of integers is one of them: exact
                y = (pooled.reshape(*lead, *pooled.shape[1:]), st)
            elif op == "gsumpool":
                y = (a.to(torch.float32).sum(dim=(-1, -2)), st)  # bound < 2^24 checked by analyze
            elif op == "flatten":
                y = (a.reshape(*lead, -1), st)
            else:  # pragma: no cover
                raise DeployError(f"unknown op {op!r}")
            env[n["output"]] = y
            if not keep_all:
                for name in n["inputs"]:
                    if last_use.get(name) == i and name != self.program.output:
                        env.pop(name, None)
        result = {}
        for name, (v, st) in env.items():
            if st:
                v = v.unsqueeze(0).expand(T, *v.shape)
            result[name] = v
        return result

    # -- skipping: gated conv + pruned LIF ----------------------------------------------------
    def _skip_conv_lif(self, x: torch.Tensor, static: bool, T: int, nc: dict, nl: dict, gate) -> torch.Tensor:
        """Spikes [T, B, O, H', W'] (uint8) of a gated conv + pruned LIF, computing only what is kept.

        Three exact paths (``skip_paths[conv name]``, chosen per layer by :meth:`calibrate`):

        * ``union`` (default): the output channels the gate keeps for at least one sample and step
          are gathered, and the input channels with at least one spike; the convolution (all steps
          at once) and the LIF loop run on those channels only, the LIF in float32 where the bounds
          prove every value is an integer below 2^24.
          A channel the gate never keeps gets no current at any step: its state stays 0 and it
          spikes iff 0 > V_c, filled in without computing.
        * ``gather``: per step, the channels kept by the gate AND the channel prior (which needs
          m_{t-1}) are gathered per sample into a batched im2col matmul over the K = max kept
          channels of a sample, padded with a zero row.
        * ``gather_in``: ``gather`` that also drops, per sample and step, the input channels
          without a single spike (channels the previous layer's gate switched off, silent
          channels): the matmul runs over the kept outputs x the active inputs only.

        All apply the spatial prior and the channel prior exactly as the dense path does; every
        value is an integer within the bounds ``analyze`` proved, so float sums are exact in any
        order and the epilogue is the conv path's, element for element: bit-identical.
        """
        pc, pl = self._torch[nc["name"]], self._torch[nl["name"]]
        O, Ho, Wo = self.info[nc["output"]]["shape"]
        B = x.shape[0] if static else x.shape[1]
        if gate is None:
            gate = torch.ones(T, B, O, dtype=torch.bool)
        path = self.skip_paths.get(nc["name"], "union")
        if path in ("gather", "gather_in"):
            return self._skip_gather(x, static, T, nc, nl, gate, pc, pl, O, Ho, Wo, B, path == "gather_in")
        F = self.F
        gate = gate.to(torch.bool)
        union = gate.reshape(-1, O).any(0)
        U = int(union.sum())
        V_all = pl["V"].reshape(-1)
        out = torch.empty(T, B, O, Ho, Wo, dtype=torch.bool)
        if U < O:  # never kept: no current, state 0, spike iff 0 > V_c
            off = ~union
            v_off = V_all[off] if V_all.numel() > 1 else V_all.expand(int(off.sum()))
            out[:, :, off] = (v_off < 0).view(1, 1, -1, 1, 1)
        if U == 0:
            return out.view(torch.uint8)
        idx = union.nonzero().flatten()
        flat = x.reshape(-1, *x.shape[-3:])
        # input channels without a single spike in the whole batch (e.g. switched off upstream)
        # add nothing: the convolution runs over the active ones only
        active_in = flat.any(dim=0).any(dim=-1).any(dim=-1)  # much faster than ne(0).any(dims)
        idx_in = active_in.nonzero().flatten()
        if len(idx_in) == 0:  # no input spike at all: keep one (zero) channel so the conv has an input
            idx_in = torch.zeros(1, dtype=torch.long)
        if len(idx_in) < flat.shape[1]:
            flat = flat[:, idx_in]
        key = ("union", tuple(idx.tolist()), tuple(idx_in.tolist()))
        cache = pc.setdefault("union_cache", {})
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = (
                _layout(pc["w"][idx][:, idx_in].contiguous()),
                pc["scale"][idx].view(1, -1, 1, 1),
                pc["offset"][idx].view(1, -1, 1, 1),
            )
        w, scale, offset = cache[key]
        flat = flat.to(pc["dtype"], memory_format=torch.channels_last)  # one pass: type and layout
        acc = Fn.conv2d(flat, w, stride=nc["stride"], padding=nc["padding"])
        cur = _requantize(acc, pc["epi"], scale, offset, nc["shift"])
        cur = cur.reshape(*((B,) if static else (T, B)), U, Ho, Wo)
        V = V_all[idx].view(-1, 1, 1) if V_all.numel() > 1 else V_all.view(())
        g = gate[:, :, idx].unsqueeze(-1).unsqueeze(-1)  # [T, B, U, 1, 1]
        if pl["f32"]:
            if cur.dtype != torch.float32 or not pl["noclamp"]:  # cur is ours: saturate in place
                cur = cur.clamp_(pl["imin"], pl["imax"]).to(torch.float32)
            spikes = self._union_lif_f32(cur, static, T, B, V.to(torch.float32), g, nl, F)
        else:
            spikes = self._union_lif_i64(cur.to(torch.int64), static, T, B, V.to(torch.int64), g, nl, F)
        if U == O:
            return spikes.view(torch.uint8)
        out[:, :, idx] = spikes
        return out.view(torch.uint8)

    @staticmethod
    def _union_lif_f32(cur, static, T, B, V, g, nl, F) -> torch.Tensor:
        """Spikes [T, B, U, H, W] (bool) of the union path's LIF in float32.

        Exact: every value is an integer below 2^24 (``f32`` is only chosen when the LIF bound
        proves it) and the scalings are powers of two. The masks are float 0./1. tensors, not bool
        ones (bool comparisons, bool masks and float x bool products are not vectorized on CPUs):
        ``m > level`` is ``clamp(m - level, 0, 1)`` and ``u > V`` is ``clamp(u - V, 0, 1)`` (integers:
        a difference >= 1 or <= 0; one that rounds is far beyond 1 in magnitude), a product with a
        0./1. mask is exact, and the reset ``m - m s`` is +0. where the neuron spiked."""
        lb, ub, tau = int(nl["lb"]), int(nl["ub"]), int(nl["tau_shift"])
        leak, inv, half = float(1 << (F - tau)), 2.0**-F, float(1 << (F - 1))
        first = cur if static else cur[0]
        U, Ho, Wo = first.shape[-3:]
        # the state in the current's memory layout (channels_last from the convolution), so every
        # element-wise pass walks the three tensors in the same order
        m = torch.zeros_like(first)
        spare = torch.empty_like(first)
        s_f = torch.empty_like(first)
        sp = torch.empty_like(first) if nl["prior_spatial"] else None
        spikes = torch.empty((T, B, U, Ho, Wo), dtype=torch.bool)
        gf = g.to(torch.float32)
        for t in range(T):
            i_t = cur if static else cur[t]
            keep = gf[t]  # [B, U, 1, 1]
            if t > 0 and nl["prior_channel"]:
                alive = m.sum(dim=(-2, -1)) >= nl["prior_channel_min"]  # exact: integer sums < 2^24
                keep = keep * alive.view(B, U, 1, 1).to(torch.float32)
            u = torch.mul(m, leak, out=spare)
            if t > 0 and nl["prior_spatial"]:
                torch.sub(m, nl["prior_spatial_level"], out=sp).clamp_(0, 1).mul_(keep)
                u.addcmul_(i_t, sp)
            else:
                u.addcmul_(i_t, keep)
            torch.sub(u, V, out=s_f).clamp_(0, 1)
            spikes[t].copy_(s_f)
            spare = m
            m = u.add_(half).mul_(inv).floor_().clamp_(lb, ub)
            m.addcmul_(m, s_f, value=-1)
        return spikes

    @staticmethod
    def _union_lif_i64(cur, static, T, B, V, g, nl, F) -> torch.Tensor:
        """Spikes [T, B, U, H, W] (bool) of the union path's LIF in int64 (bounds past 2^24)."""
        lb, ub, tau = int(nl["lb"]), int(nl["ub"]), int(nl["tau_shift"])
        first = cur if static else cur[0]
        U, Ho, Wo = first.shape[-3:]
        m = torch.zeros(B, U, Ho, Wo, dtype=torch.int64)
        spikes = torch.empty((T, B, U, Ho, Wo), dtype=torch.bool)
        for t in range(T):
            i_t = cur if static else cur[t]
            keep = g[t]
            if t > 0 and nl["prior_channel"]:
                keep = keep & (m.sum(dim=(-2, -1)) >= nl["prior_channel_min"]).view(B, U, 1, 1)
            if t > 0 and nl["prior_spatial"]:
                keep = keep & (m > nl["prior_spatial_level"])
            u = i_t * keep + (m << (F - tau) if F >= tau else m)
            s = torch.gt(u, V, out=spikes[t])
            m = ((u + (1 << (F - 1))) >> F).clamp_(lb, ub).masked_fill_(s, 0)
        return spikes

    def _skip_gather(
        self, x, static, T, nc, nl, gate, pc, pl, O, Ho, Wo, B, input_sparse=False
    ) -> torch.Tensor:
        F = self.F
        k, stride, pad = int(nc["kernel"]), int(nc["stride"]), int(nc["padding"])
        C = x.shape[-3]
        if "w2p" not in pc:
            w2 = pc["w"].contiguous().reshape(O, -1)
            pc["w2p"] = torch.cat([w2, w2.new_zeros(1, w2.shape[1])])  # row O: the padding row
            # [O + 1, C + 1, k*k]: a zero padding row (output O) and a zero padding input channel C
            pc["w3p"] = Fn.pad(pc["w2p"].reshape(O + 1, C, k * k), (0, 0, 0, 1))
            for key in ("scale", "offset"):
                pc[key + "p"] = torch.cat([pc[key], pc[key].new_zeros(1)])
        dt = pc["dtype"]
        flat = x.reshape(-1, *x.shape[-3:]).to(dt)
        cols = Fn.unfold(flat, k, padding=pad, stride=stride)  # [N, C*k*k, L]
        L = cols.shape[-1]
        if input_sparse:
            active_in = flat.reshape(flat.shape[0], C, -1).any(-1)  # [N, C]
            cols = Fn.pad(cols.reshape(-1, C, k * k, L), (0, 0, 0, 0, 0, 1))  # input channel C: zeros
            arange_in = torch.arange(C)
        lb, ub, tau = int(nl["lb"]), int(nl["ub"]), int(nl["tau_shift"])
        half = 1 << (F - 1)
        V = pl["V"].to(torch.int64)
        V = V.view(1, -1, 1) if V.numel() > 1 else V.view(())
        m = torch.zeros(B, O, L, dtype=torch.int64)
        out = torch.empty(T, B, O, L, dtype=torch.bool)
        arange = torch.arange(O)
        for t in range(T):
            cols_t = cols if static else cols[t * B : (t + 1) * B]
            keep = gate[t].to(torch.bool)
            if t > 0 and nl["prior_channel"]:
                keep = keep & (m.sum(-1) >= nl["prior_channel_min"])
            cnt = keep.sum(1)
            K = int(cnt.max()) if B else 0
            if K == 0:
                cur = torch.zeros(B, O, L, dtype=dt)
            else:
                # kept channels first (ascending), padded with the zero row O
                order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :K]
                idx = torch.where(arange[:K].unsqueeze(0) < cnt.unsqueeze(1), order, O)
                if input_sparse:
                    act = active_in if static else active_in[t * B : (t + 1) * B]
                    cnt_in = act.sum(1)
                    K_in = max(1, int(cnt_in.max()) if B else 1)
                    order_in = torch.argsort((~act).to(torch.int8), dim=1, stable=True)[:, :K_in]
                    idx_in = torch.where(arange_in[:K_in].unsqueeze(0) < cnt_in.unsqueeze(1), order_in, C)
                    rows = torch.arange(B).unsqueeze(1)
                    w_sel = pc["w3p"][idx.unsqueeze(-1), idx_in.unsqueeze(1)]  # [B, K, K_in, k*k]
                    c_sel = cols_t[rows, idx_in]  # [B, K_in, k*k, L]
                    acc = torch.bmm(w_sel.reshape(B, K, -1), c_sel.reshape(B, -1, L))  # [B, K, L]
                else:
                    acc = torch.bmm(pc["w2p"][idx], cols_t)  # [B, K, L]
                scale, offset = pc["scalep"][idx].unsqueeze(-1), pc["offsetp"][idx].unsqueeze(-1)
                part = _requantize(acc, pc["epi"], scale, offset, nc["shift"])
                cur = torch.zeros(B, O + 1, L, dtype=part.dtype).scatter_(
                    1, idx.unsqueeze(-1).expand(B, K, L), part
                )[:, :O]
            if pl["f32"]:
                if cur.dtype != torch.float32 or not pl["noclamp"]:
                    cur = cur.clamp(pl["imin"], pl["imax"]).to(torch.float32)
            cur = cur * keep.unsqueeze(-1)  # after the saturation, as the dense path does
            if t > 0 and nl["prior_spatial"]:
                cur = cur * (m > nl["prior_spatial_level"])
            u = cur.to(torch.int64) + (m << (F - tau) if F >= tau else m)
            s = torch.gt(u, V, out=out[t])
            m = ((u + half) >> F).clamp_(lb, ub).masked_fill_(s, 0)
        return out.view(torch.uint8).reshape(T, B, O, Ho, Wo)

    @torch.no_grad()
    def calibrate(self, codes, T: int | None = None, repeats: int = 3) -> dict[str, str]:
        """Time the exact paths of every skipping layer on ``codes`` and keep the fastest per layer
        (``skip_paths``); results never depend on the choice. Returns the choice per conv node."""
        names = [self._conv_of[k]["name"] for k in self._conv_of]
        best: dict[str, tuple[float, str]] = {}
        for path in ("union", "gather", "gather_in"):
            self.skip_paths = {n: path for n in names}
            self.run_all_fast(codes, T, keep_all=False)  # warm-up
            times: dict[str, list] = {n: [] for n in names}
            orig = self._skip_conv_lif

            def timed(x, st, T_, nc, nl, gate, _orig=orig, _times=times):
                t0 = time.perf_counter()
                r = _orig(x, st, T_, nc, nl, gate)
                _times[nc["name"]].append(time.perf_counter() - t0)
                return r

            self._skip_conv_lif = timed
            try:
                for _ in range(repeats):
                    self.run_all_fast(codes, T, keep_all=False)
            finally:
                del self._skip_conv_lif
            for n in names:
                med = sorted(times[n])[len(times[n]) // 2]
                if n not in best or med < best[n][0]:
                    best[n] = (med, path)
        self.skip_paths = {n: p for n, (_, p) in best.items()}
        return dict(self.skip_paths)

    # -- public ------------------------------------------------------------------------------
    def run(self, codes, T: int | None = None, path: str = "fast") -> np.ndarray:
        """Integer logits [T, B, classes] (int64, fixed point with F fractional bits)."""
        if path == "fast":
            out = self.run_all_fast(codes, T, keep_all=False)[self.program.output]
            return out.to(torch.int64).cpu().numpy()
        if path == "reference":
            return self.run_all_reference(codes, T)[self.program.output]
        raise ValueError(f"path must be 'fast' or 'reference', got {path!r}")

    def run_all(self, codes, T: int | None = None, path: str = "fast") -> dict[str, np.ndarray]:
        if path == "fast":
            return {k: v.to(torch.int64).cpu().numpy() for k, v in self.run_all_fast(codes, T).items()}
        return {k: np.asarray(v, dtype=np.int64) for k, v in self.run_all_reference(codes, T).items()}

    def predict(self, codes, T: int | None = None, path: str = "fast") -> np.ndarray:
        return self.run(codes, T, path).sum(axis=0).argmax(-1)

    def evaluate(self, codes, labels, T: int, batch_size: int = 256, path: str = "fast") -> dict:
        """Accuracy and samples/s over static inputs [N, C, H, W] (codes) and labels [N]."""
        labels = np.asarray(labels)
        correct = 0
        t0 = time.perf_counter()
        counts = OpCounts()
        for i in range(0, len(labels), batch_size):
            pred = self.predict(codes[i : i + batch_size], T=T, path=path)
            correct += int((pred == labels[i : i + batch_size]).sum())
            if path == "reference":
                for k, v in self.last_counts.as_dict().items():
                    setattr(counts, k, getattr(counts, k) + v)
        dt = time.perf_counter() - t0
        res = {
            "accuracy": correct / max(1, len(labels)),
            "samples": len(labels),
            "seconds": dt,
            "samples_per_s": len(labels) / dt if dt else float("inf"),
        }
        if path == "reference":
            res["ops"] = counts.as_dict()
        return res
