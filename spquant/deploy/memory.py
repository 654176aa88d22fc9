"""Memory as deployed: what the integer program stores, counted at the bit widths it needs.

The paper's convention (docs/method.md, "Memory accounting") counts parameters x weight bits plus
one step of membrane state. A deployed integer model also stores everything the float model folded
away: per output channel a fixed-point multiplier ``M`` and bias ``B`` (BatchNorm, weight and input
scales), one shift per layer, the integer thresholds ``V``, and in SpQuant-SNN the gate rule's
matrix and exponent tables. :func:`deployed_memory` counts all of it from a folded
:class:`~spquant.deploy.fold.Program`:

* weight codes packed as the ``.spq`` file stores them (ternary 5 per byte, 4-bit nibbles,
  binary 8 per byte);
* every other integer array at its **minimal signed width**: ``1 + max bit length of |v|`` bits
  per element (the width a datapath register or ROM needs to hold every value of that array);
  one 8-bit shift per conv/linear node;
* the membrane: LIF neurons of one sample at one step x the packed bits of its grid (1.6 for
  ternary), as in the paper's convention.

The FP32 reference is the same network deployed in float: weights, the folded BN scale and bias
per channel, thresholds and the membrane, all at 32 bits (no gates: the FP32 SNN has none). For a
compacted program (silent channels removed, :mod:`spquant.deploy.compact`) it is the network as
trained, before compaction, as recorded in ``meta["compaction"]``.
Bytes are 10^6 per MB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from spquant.deploy.packing import packed_nbytes
from spquant.deploy.program import Program, analyze

__all__ = ["DeployedMemory", "deployed_memory", "signed_bits", "format_deployed"]

MB = 1e6


def signed_bits(a: np.ndarray) -> int:
    """Bits of a two's-complement field holding every value of ``a`` (at least 1; 1 + bit length)."""
    a = np.asarray(a, dtype=np.int64)
    if a.size == 0:
        return 1
    hi = int(a.max())
    lo = int(a.min())
    need = max(hi.bit_length() if hi > 0 else 0, (-lo - 1).bit_length() if lo < 0 else 0)
    return need + 1


@dataclass
class DeployedMemory:
    weight_bytes: float  # packed weight codes
    fixed_point_bytes: float  # M, B, shifts, thresholds, gate arrays at their minimal widths
    membrane_bytes: float  # one sample, one step, packed
    total_bytes: float
    fp32_bytes: float  # the same network deployed in float (see the module docstring)
    reduction: float
    by_kind: dict = field(default_factory=dict)  # bytes per kind: weights, multipliers, biases, ...
    widths: dict = field(default_factory=dict)  # array name -> bits per element

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MB

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_mb=self.total_mb, fp32_mb=self.fp32_bytes / MB)
        return d


def deployed_memory(program: Program) -> DeployedMemory:
    """Count the stored bits of ``program`` (see the module docstring)."""
    from spquant.quant import packed_bits_per_value

    info = analyze(program)
    kinds: dict[str, float] = {}
    widths: dict[str, int] = {}

    def add(kind: str, nbytes: float):
        kinds[kind] = kinds.get(kind, 0.0) + nbytes

    fp32_params = 0
    membrane_bits = 0.0
    fp32_membrane = 0
    for n in program.nodes:
        op = n["op"]
        if op in ("conv", "linear"):
            w = program.arrays[n["weight"]]
            add("weights", packed_nbytes(w.size, int(n["bits"])))
            for key, kind in (("M", "multipliers"), ("B", "biases")):
                arr = program.arrays[n[key]]
                widths[n[key]] = signed_bits(arr)
                add(kind, arr.size * widths[n[key]] / 8)
            add("shifts", 1)
            fp32_params += w.size + 2 * w.shape[0]  # weights + folded BN scale and bias
        elif op in ("lif", "lif_pruned"):
            V = program.arrays[n["V"]]
            widths[n["V"]] = signed_bits(V)
            add("thresholds", V.size * widths[n["V"]] / 8)
            neurons = int(np.prod(info[n["output"]]["shape"]))
            membrane_bits += neurons * packed_bits_per_value(int(n["ub"]) - int(n["lb"]) + 1)
            fp32_membrane += neurons
            fp32_params += V.size
            if op == "lif_pruned":
                add("prior", 8)  # the prior's per-layer bounds (two small integers)
        elif op == "channel_gate":
            for key in ("A", "exp_hi", "exp_lo"):
                arr = program.arrays[n[key]]
                widths[n[key]] = signed_bits(arr)
                add("gates", arr.size * widths[n[key]] / 8)
        elif op == "scale_current":
            add("shifts", 8)
    weight_bytes = kinds.get("weights", 0.0)
    fixed = sum(v for k, v in kinds.items() if k != "weights")
    membrane_bytes = membrane_bits / 8
    kinds["membrane"] = membrane_bytes
    total = weight_bytes + fixed + membrane_bytes
    fp32 = 4.0 * (fp32_params + fp32_membrane)
    # a compacted program (spquant.deploy.compact) is compared with the network as trained
    comp = program.meta.get("compaction")
    recorded = comp.get("fp32_bytes") if isinstance(comp, dict) else None
    if isinstance(recorded, (int, float)) and math.isfinite(recorded) and recorded > 0:
        fp32 = float(recorded)
    return DeployedMemory(
        weight_bytes,
        fixed,
        membrane_bytes,
        total,
        fp32,
        fp32 / total if total else float("inf"),
        kinds,
        widths,
    )


def format_deployed(m: DeployedMemory, title: str = "") -> str:
    lines = [f"memory as deployed{': ' + title if title else ''}  (MB = 10^6 bytes; minimal integer widths)"]
    for kind, nbytes in m.by_kind.items():
        lines.append(f"  {kind:<22s}{nbytes / MB:.6f} MB")
    lines.append(f"  total                 {m.total_mb:.6f} MB")
    lines.append(
        f"  FP32 deployed         {m.fp32_bytes / MB:.6f} MB  (weights, folded BN, thresholds, membrane at 32 bits)"
    )
    lines.append(f"  reduction             {m.reduction:.2f}x")
    return "\n".join(lines)
