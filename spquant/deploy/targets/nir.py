"""NIR export of a folded program (optional extra ``nir``). Lossy by nature.

NIR describes continuous-time neurons with float parameters; it has no integer membrane, no
quantizer after the reset and no fixed-point rounding. The export maps the integer program to its
float meaning and records everything NIR cannot express in metadata:

* ``Conv2d`` / ``Affine``: weight = ``codes * M / 2^(F+S)`` and bias = ``B / 2^(F+S)`` per output
  channel (BN, weight scale and input scale folded; the current is in threshold units). The graph
  input is the integer input code (pixel 0..255), with ``metadata['input_scale']``.
* ``LIF``: ``tau * dv/dt = (v_leak - v) + r * I`` discretised with step ``dt`` (forward Euler) is
  ``v <- (1 - dt/tau) v + (dt/tau) r I``; with ``tau = dt / (1 - 2^-k)``, ``r = 1 / (1 - 2^-k)``,
  ``v_leak = 0`` this is the spquant update ``u = 2^-k m + I`` (tau = 0.5: ``tau = 2 dt``, ``r = 2``).
  ``v_threshold = V / 2^F``, ``v_reset = 0`` (hard reset). Metadata per LIF: ``membrane_grid``
  ``[lb, ub]``, ``membrane_bits``, ``membrane_rounding 'half_up'``, ``reset 'hard_to_zero_then_quantize'``,
  ``spike 'u > v_threshold (strict)'``, ``frac_bits``, ``dt``, ``integer V``.
* ``SumPool2d`` for the sum pooling (the 1/k^2 is folded into the next layer), ``Flatten``.
* Residual adds: two edges into the LIF node (NIR sums the inputs of a node).

Graph metadata: ``source 'spquant'``, ``format_version``, ``frac_bits``, ``dt``, ``readout 'argmax of the
sum over T of the output'``, and ``weight_bits`` per layer (in each node's metadata).
"""

from __future__ import annotations

import math

import numpy as np

from spquant.deploy.program import Program, analyze

__all__ = ["to_nir", "export_nir"]


def _require_nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIR export needs the optional extra: pip install 'spquant[nir]'") from e
    return nir


def to_nir(program: Program, dt: float = 1e-3):
    """The NIR graph (``nir.NIRGraph``) of a folded program."""
    nir = _require_nir()
    info = analyze(program)
    F = program.frac_bits
    nodes = {"input": nir.Input(input_type={"input": np.array(program.input["shape"])})}
    edges = []
    rename = {program.input["name"]: "input"}
    for n in program.nodes:
        op, name = n["op"], n["name"]
        meta = {"spquant_op": op}
        src = [rename[i] for i in n["inputs"] if rename.get(i) is not None]
        if op in ("conv", "linear"):
            S = int(n["shift"])
            scale = 2.0 ** -(F + S)
            M = program.arrays[n["M"]].astype(np.float64) * scale
            codes = program.arrays[n["weight"]].astype(np.float64)
            w = codes * M.reshape((-1,) + (1,) * (codes.ndim - 1))
            b = program.arrays[n["B"]].astype(np.float64) * scale
            meta.update(weight_bits=int(n["bits"]), weight_codes_scale="per-channel M/2^(F+S)", shift=S, frac_bits=F)
            if op == "conv":
                hw = tuple(info[n["inputs"][0]]["shape"][1:])
                node = nir.Conv2d(input_shape=hw, weight=w.astype(np.float32), stride=n["stride"], padding=n["padding"],
                                  dilation=1, groups=1, bias=b.astype(np.float32), metadata=meta)
            else:
                node = nir.Affine(weight=w.astype(np.float32), bias=b.astype(np.float32), metadata=meta)
        elif op == "channel_gate":  # not expressible in NIR: dropped (recorded on the LIF it fed)
            rename[n["output"]] = None
            continue
        elif op in ("lif", "lif_pruned"):
            if op == "lif_pruned":
                meta.update(dropped="learned channel gate and membrane-prior skips (not expressible in NIR)",
                            prior_channel=n["prior_channel"], prior_channel_min=n["prior_channel_min"],
                            prior_spatial=n["prior_spatial"], prior_spatial_level=n["prior_spatial_level"],
                            gated=len(n["inputs"]) > 1)
            shape = tuple(info[n["output"]]["shape"])
            k = int(n["tau_shift"])
            decay = 1.0 - 2.0**-k
            V = program.arrays[n["V"]].astype(np.float64) / 2.0**F
            Vfull = np.broadcast_to(V.reshape((-1,) + (1,) * (len(shape) - 1)) if V.size > 1 else V.reshape(()), shape)
            ones = np.ones(shape, dtype=np.float32)
            tau = dt / decay if decay > 0 else math.inf
            r = 1.0 / decay if decay > 0 else 1.0
            lb, ub = int(n["lb"]), int(n["ub"])
            meta.update(
                membrane_grid=[lb, ub], membrane_bits=float(math.log2(ub - lb + 1)), membrane_rounding="half_up",
                reset="hard_to_zero_then_quantize", spike="u > v_threshold (strict)", frac_bits=F, dt=dt,
                tau_shift=k, integer_threshold=program.arrays[n["V"]].astype(np.int64).tolist(),
            )
            node = nir.LIF(tau=(ones * tau).astype(np.float32), r=(ones * r).astype(np.float32), v_leak=np.zeros(shape, np.float32),
                           v_threshold=np.ascontiguousarray(Vfull, dtype=np.float32), v_reset=np.zeros(shape, np.float32), metadata=meta)
        elif op == "sumpool":
            kk = int(n["kernel"])
            node = nir.SumPool2d(kernel_size=np.array([kk, kk]), stride=np.array([kk, kk]), padding=np.array([0, 0]), metadata=meta)
        elif op == "flatten":
            node = nir.Flatten(input_type={"input": np.array(info[n["inputs"][0]]["shape"])}, start_dim=0, metadata=meta)
        elif op == "gsumpool":  # global sum pool = SumPool2d over the whole map, then Flatten
            c, h, w = info[n["inputs"][0]]["shape"]
            nodes[name + "_pool"] = nir.SumPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0]), metadata=meta)
            for s2 in src:
                edges.append((s2, name + "_pool"))
            src = [name + "_pool"]
            node = nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0, metadata=meta)
        elif op == "scale_current":
            node = nir.Scale(scale=np.full(tuple(info[n["output"]]["shape"]), int(n["K"]) / 2.0**F, np.float32), metadata=meta)
        elif op == "add":  # NIR sums all inputs of a node: forward both edges to the consumer
            rename[n["output"]] = src
            continue
        else:  # pragma: no cover
            raise ValueError(f"unknown op {op!r}")
        nodes[name] = node
        for s in src:
            for s2 in (s if isinstance(s, list) else [s]):
                edges.append((s2, name))
        rename[n["output"]] = name
    out_shape = info[program.output]["shape"]
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    edges.append((rename[program.output], "output"))
    meta = {"source": "spquant", "format_version": 1, "frac_bits": F, "dt": dt, "input_scale": program.input["scale"],
            "input_max": program.input["max"], "readout": "argmax of the sum over T of the output",
            "lossy": "integer membrane grid, half-up rounding and fixed-point rounding are not expressible in NIR"}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except Exception:  # older/newer NIR type checks can be stricter than needed; keep the graph
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def export_nir(program: Program, path, dt: float = 1e-3):
    """Write the NIR graph of ``program`` to ``path`` (HDF5, via ``nir.write``); returns the graph."""
    nir = _require_nir()
    graph = to_nir(program, dt)
    nir.write(path, graph)
    return graph
