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

from spquant.deploy.program import DeployError, Program, analyze

__all__ = ["to_nir", "export_nir"]


def _require_nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIR export needs the optional extra: pip install 'spquant[nir]'") from e
    return nir


class _Graph:
    """The NIR graph under construction: nodes, edges, and which NIR node stands for each tensor."""

    def __init__(self, nir, program: Program, dt: float):
        self.nir, self.program, self.dt = nir, program, dt
        self.info = analyze(program)
        self.F = program.frac_bits
        self.nodes = {"input": nir.Input(input_type={"input": np.array(program.input["shape"])})}
        self.edges: list[tuple[str, str]] = []
        # tensor name -> NIR node name, a list of them (an add: NIR sums all inputs), or None (dropped)
        self.rename: dict[str, str | list | None] = {program.input["name"]: "input"}

    def sources(self, n: dict) -> list:
        return [self.rename[i] for i in n["inputs"] if self.rename.get(i) is not None]


# one handler per program op: (graph, node, sources, metadata) -> NIR node, or None when the op
# only re-routes edges (the handler then sets graph.rename itself)
def _nir_affine(g: _Graph, n: dict, src: list, meta: dict):
    S, F = int(n["shift"]), g.F
    scale = 2.0 ** -(F + S)
    M = g.program.arrays[n["M"]].astype(np.float64) * scale
    codes = g.program.arrays[n["weight"]].astype(np.float64)
    w = codes * M.reshape((-1,) + (1,) * (codes.ndim - 1))
    b = g.program.arrays[n["B"]].astype(np.float64) * scale
    meta.update(weight_bits=int(n["bits"]), weight_codes_scale="per-channel M/2^(F+S)", shift=S, frac_bits=F)
    if n["op"] == "conv":
        hw = tuple(g.info[n["inputs"][0]]["shape"][1:])
        return g.nir.Conv2d(
            input_shape=hw,
            weight=w.astype(np.float32),
            stride=n["stride"],
            padding=n["padding"],
            dilation=1,
            groups=1,
            bias=b.astype(np.float32),
            metadata=meta,
        )
    return g.nir.Affine(weight=w.astype(np.float32), bias=b.astype(np.float32), metadata=meta)


def _nir_channel_gate(g: _Graph, n: dict, src: list, meta: dict):
    g.rename[n["output"]] = None  # not expressible in NIR: dropped (recorded on the LIF it fed)
    return None


def _nir_lif(g: _Graph, n: dict, src: list, meta: dict):
    F, program = g.F, g.program
    if n["op"] == "lif_pruned":
        meta.update(
            dropped="learned channel gate and membrane-prior skips (not expressible in NIR)",
            prior_channel=n["prior_channel"],
            prior_channel_min=n["prior_channel_min"],
            prior_spatial=n["prior_spatial"],
            prior_spatial_level=n["prior_spatial_level"],
            gated=len(n["inputs"]) > 1,
        )
    shape = tuple(g.info[n["output"]]["shape"])
    k = int(n["tau_shift"])
    decay = 1.0 - 2.0**-k
    V = program.arrays[n["V"]].astype(np.float64) / 2.0**F
    Vfull = np.broadcast_to(
        V.reshape((-1,) + (1,) * (len(shape) - 1)) if V.size > 1 else V.reshape(()), shape
    )
    ones = np.ones(shape, dtype=np.float32)
    tau = g.dt / decay if decay > 0 else math.inf
    r = 1.0 / decay if decay > 0 else 1.0
    lb, ub = int(n["lb"]), int(n["ub"])
    meta.update(
        membrane_grid=[lb, ub],
        membrane_bits=float(math.log2(ub - lb + 1)),
        membrane_rounding="half_up",
        reset="hard_to_zero_then_quantize",
        spike="u > v_threshold (strict)",
        frac_bits=F,
        dt=g.dt,
        tau_shift=k,
        integer_threshold=program.arrays[n["V"]].astype(np.int64).tolist(),
    )
    return g.nir.LIF(
        tau=(ones * tau).astype(np.float32),
        r=(ones * r).astype(np.float32),
        v_leak=np.zeros(shape, np.float32),
        v_threshold=np.ascontiguousarray(Vfull, dtype=np.float32),
        v_reset=np.zeros(shape, np.float32),
        metadata=meta,
    )


def _nir_sumpool(g: _Graph, n: dict, src: list, meta: dict):
    kk = int(n["kernel"])
    return g.nir.SumPool2d(
        kernel_size=np.array([kk, kk]), stride=np.array([kk, kk]), padding=np.array([0, 0]), metadata=meta
    )


def _nir_maxpool(g: _Graph, n: dict, src: list, meta: dict):
    raise DeployError(f"node {n['name']!r}: NIR has no max-pooling node; export this model as .spq instead")


def _nir_flatten(g: _Graph, n: dict, src: list, meta: dict):
    return g.nir.Flatten(
        input_type={"input": np.array(g.info[n["inputs"][0]]["shape"])}, start_dim=0, metadata=meta
    )


def _nir_gsumpool(g: _Graph, n: dict, src: list, meta: dict):
    # global sum pool = SumPool2d over the whole map, then Flatten
    c, h, w = g.info[n["inputs"][0]]["shape"]
    pool = n["name"] + "_pool"
    g.nodes[pool] = g.nir.SumPool2d(
        kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0]), metadata=meta
    )
    for s in src:
        g.edges.append((s, pool))
    src[:] = [pool]
    return g.nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0, metadata=meta)


def _nir_scale_current(g: _Graph, n: dict, src: list, meta: dict):
    scale = np.full(tuple(g.info[n["output"]]["shape"]), int(n["K"]) / 2.0**g.F, np.float32)
    return g.nir.Scale(scale=scale, metadata=meta)


def _nir_add(g: _Graph, n: dict, src: list, meta: dict):
    g.rename[n["output"]] = src  # NIR sums all inputs of a node: forward both edges to the consumer
    return None


_NIR_OPS = {
    "conv": _nir_affine,
    "linear": _nir_affine,
    "scale_current": _nir_scale_current,
    "add": _nir_add,
    "channel_gate": _nir_channel_gate,
    "lif": _nir_lif,
    "lif_pruned": _nir_lif,
    "sumpool": _nir_sumpool,
    "maxpool": _nir_maxpool,
    "gsumpool": _nir_gsumpool,
    "flatten": _nir_flatten,
}


def to_nir(program: Program, dt: float = 1e-3):
    """The NIR graph (``nir.NIRGraph``) of a folded program; :class:`DeployError` for an op NIR cannot express."""
    nir = _require_nir()
    g = _Graph(nir, program, dt)
    for n in program.nodes:
        src = g.sources(n)
        node = _NIR_OPS[n["op"]](g, n, src, {"spquant_op": n["op"]})
        if node is None:
            continue
        g.nodes[n["name"]] = node
        for s in src:
            for s2 in s if isinstance(s, list) else [s]:
                g.edges.append((s2, n["name"]))
        g.rename[n["output"]] = n["name"]
    out_shape = g.info[program.output]["shape"]
    g.nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    g.edges.append((g.rename[program.output], "output"))
    meta = {
        "source": "spquant",
        "format_version": 1,
        "frac_bits": g.F,
        "dt": dt,
        "input_scale": program.input["scale"],
        "input_max": program.input["max"],
        "readout": "argmax of the sum over T of the output",
        "lossy": "integer membrane grid, half-up rounding and fixed-point rounding are not expressible in NIR",
    }
    try:
        return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=meta)
    except Exception:  # older/newer NIR type checks can be stricter than needed; keep the graph
        return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=meta, type_check=False)


def export_nir(program: Program, path, dt: float = 1e-3):
    """Write the NIR graph of ``program`` to ``path`` (HDF5, via ``nir.write``); returns the graph."""
    nir = _require_nir()
    graph = to_nir(program, dt)
    nir.write(path, graph)
    return graph
