"""Remove provably silent channels from an integer program (docs/deploy.md, "Compaction").

A learned channel gate in integer form decides ``g[o] = (E . A[o] >= 0)`` where ``E`` are the
softmax numerators ``exp(-beta (max cnt - cnt))`` in fixed point: every ``E[j] >= 0`` and the
channel with the largest count has ``E = E(0) > 0``. So, for every possible input,

* ``A[o, j] < 0`` for all ``j`` gives ``E . A[o] < 0``: output channel ``o`` is never kept;
* ``A[o, j] >= 0`` for all ``j`` gives ``E . A[o] >= 0``: it is always kept.

A channel that is never kept gets no current at any step, so its membrane stays 0 and, with a
threshold ``V >= 0`` (spike iff ``u > V``), it never spikes. Such a channel is removed everywhere:
the conv's output row (weights, ``M``, ``B``), its threshold, the gate's row, and downstream the
input channel of the next conv, the features of the linear layer after a flatten (through any
pooling), and the column of the next gate. A gate also reads the silent channels' counts (always 0,
so each contributes ``E(max cnt) * A[o, j]``): their columns are summed into one extra last column
of ``A`` whose count is 0 (program.py, ``channel_gate``), which keeps every decision identical.
A gate whose remaining rows are all always-kept is removed, and its LIF becomes a plain ``lif``
when it has no membrane prior either.

The compacted program computes bit-identical outputs for every input (tests/deploy/test_compact.py
checks the outputs and every surviving tensor against the original program). Channels are only
removed where every consumer is one of the ops above; a silent channel feeding a residual ``add``
or the program output is kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from spquant.deploy.program import Program, analyze

__all__ = ["CompactReport", "compact", "static_gate_rows"]

_CHANNELWISE = ("sumpool", "maxpool", "gsumpool")


@dataclass
class CompactReport:
    """What :func:`compact` removed: per gated layer, channels before and after."""

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # LIF name -> (channels, kept)
    gates_removed: list[str] = field(default_factory=list)
    weights_before: int = 0
    weights_after: int = 0

    @property
    def changed(self) -> bool:
        return self.weights_after != self.weights_before or bool(self.gates_removed)

    def to_dict(self) -> dict:
        return {
            "layers": {k: list(v) for k, v in self.layers.items()},
            "gates_removed": list(self.gates_removed),
            "weights_before": self.weights_before,
            "weights_after": self.weights_after,
        }

    def __str__(self) -> str:
        lines = [f"compaction: {self.weights_before} -> {self.weights_after} weights"]
        for name, (c, k) in self.layers.items():
            lines.append(f"  {name}: {k}/{c} channels kept")
        if self.gates_removed:
            lines.append(f"  gates now constant (removed): {', '.join(self.gates_removed)}")
        return "\n".join(lines)


def static_gate_rows(program: Program, node: dict) -> tuple[np.ndarray, np.ndarray]:
    """(never kept, always kept) boolean masks over the output channels of a ``channel_gate`` node.

    Both are all False when the exponent tables do not guarantee ``E >= 0`` with ``E(0) > 0``."""
    A = program.arrays[node["A"]].astype(np.int64)
    hi = program.arrays[node["exp_hi"]].astype(np.int64)
    lo = program.arrays[node["exp_lo"]].astype(np.int64)
    fe = int(node["exp_frac_bits"])
    none = np.zeros(A.shape[0], dtype=bool)
    if hi.size == 0 or lo.size == 0 or hi.min() < 0 or lo.min() < 0:
        return none, none
    if (int(hi[0]) * int(lo[0]) + (1 << (fe - 1))) >> fe <= 0:
        return none, none
    return (A < 0).all(axis=1), (A >= 0).all(axis=1)


def _silent_reach(program, consumers, info, tensor: str, silent: np.ndarray, plan: dict) -> bool:
    """Follow silent channels of ``tensor`` (bool over its channels or features) to the layers that
    read them, recording in ``plan`` what each loses. False when some consumer cannot drop them."""
    if tensor == program.output:
        return False
    for n in consumers.get(tensor, []):
        op = n["op"]
        if op in _CHANNELWISE:
            if not _silent_reach(program, consumers, info, n["output"], silent, plan):
                return False
        elif op == "flatten":
            c, *rest = info[tensor]["shape"]
            per = int(np.prod(rest)) if rest else 1
            if not _silent_reach(program, consumers, info, n["output"], np.repeat(silent, per), plan):
                return False
        elif op in ("conv", "linear") and n["inputs"] == [tensor]:
            plan.setdefault(("in", n["name"]), []).append(silent)
        elif op == "channel_gate" and n["inputs"] == [tensor]:
            plan.setdefault(("gate_in", n["name"]), []).append(silent)
        else:
            return False
    return True


def compact(program: Program) -> tuple[Program, CompactReport]:
    """A copy of ``program`` without its provably silent channels (see the module docstring)."""
    info = analyze(program)
    consumers = program.consumers()
    by_output = {n["output"]: n for n in program.nodes}
    report = CompactReport(weights_before=program.weight_params())
    plan: dict[tuple[str, str], list[np.ndarray]] = {}
    constant_gates: list[str] = []
    for lif in program.nodes:
        if lif["op"] != "lif_pruned" or len(lif["inputs"]) != 2:
            continue
        gate, conv = by_output[lif["inputs"][1]], by_output[lif["inputs"][0]]
        if gate["op"] != "channel_gate" or conv["op"] != "conv":
            continue
        if len(consumers[gate["output"]]) != 1 or len(consumers[conv["output"]]) != 1:
            continue
        off, on = static_gate_rows(program, gate)
        V = program.arrays[lif["V"]].astype(np.int64)
        silent = off & (np.broadcast_to(V, off.shape) >= 0)
        if silent.any():
            trial: dict = {}
            if _silent_reach(program, consumers, info, lif["output"], silent, trial) and not silent.all():
                for key, masks in trial.items():
                    plan.setdefault(key, []).extend(masks)
                plan.setdefault(("out", conv["name"]), []).append(silent)
                plan.setdefault(("gate_out", gate["name"]), []).append(silent)
                plan.setdefault(("lif", lif["name"]), []).append(silent)
            else:
                silent = np.zeros_like(silent)
        report.layers[lif["name"]] = (int(silent.size), int((~silent).sum()))
        if (on | silent).all():
            constant_gates.append(gate["name"])

    out = copy.deepcopy(program)
    nodes = {n["name"]: n for n in out.nodes}

    def drop(key: tuple[str, str]) -> np.ndarray | None:
        masks = plan.get(key)
        return None if not masks else np.logical_or.reduce(masks)

    for n in out.nodes:
        name, op = n["name"], n["op"]
        if op in ("conv", "linear"):
            w = out.arrays[n["weight"]]
            rows, cols = drop(("out", name)), drop(("in", name))
            if cols is not None:
                w = w[:, ~cols]
            if rows is not None:
                w = w[~rows]
                for key in ("M", "B"):
                    out.arrays[n[key]] = out.arrays[n[key]][~rows]
            out.arrays[n["weight"]] = np.ascontiguousarray(w)
        elif op == "channel_gate":
            A = out.arrays[n["A"]].astype(np.int64)
            rows, cols = drop(("gate_out", name)), drop(("gate_in", name))
            if cols is not None:
                c_in = info[n["inputs"][0]]["shape"][0]
                live, phantom = A[:, :c_in], A[:, c_in:]  # an earlier compaction's column, if any
                zero = live[:, cols].sum(axis=1, keepdims=True) + phantom.sum(axis=1, keepdims=True)
                A = np.concatenate([live[:, ~cols], zero], axis=1)
            if rows is not None:
                A = A[~rows]
            out.arrays[n["A"]] = A.astype(program.arrays[n["A"]].dtype)
        elif op == "lif_pruned":
            rows = drop(("lif", name))
            if rows is not None and out.arrays[n["V"]].size > 1:
                out.arrays[n["V"]] = out.arrays[n["V"]][~rows]
    for gname in constant_gates:
        lif = next(n for n in out.nodes if n["op"] == "lif_pruned" and gname in n["inputs"])
        lif["inputs"] = [lif["inputs"][0]]
        if not lif["prior_channel"] and not lif["prior_spatial"]:
            for key in ("prior_channel", "prior_channel_min", "prior_spatial", "prior_spatial_level"):
                lif.pop(key)
            lif["op"] = "lif"
        g = nodes[gname]
        out.nodes.remove(g)
        for key in ("A", "exp_hi", "exp_lo"):
            out.arrays.pop(g[key])
        report.gates_removed.append(gname)
    analyze(out)  # the rewritten program is consistent (raises DeployError otherwise)
    report.weights_after = out.weight_params()
    if report.changed:
        from spquant.deploy.memory import deployed_memory

        # memory as deployed compares with the network as trained, not the compacted one
        out.meta["compaction"] = {**report.to_dict(), "fp32_bytes": deployed_memory(program).fp32_bytes}
    return out, report
