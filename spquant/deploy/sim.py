"""Deploy-simulation mode: the folded fixed-point arithmetic as a PyTorch module
(docs/method.md#integer-deployment).

:func:`deploy_sim` builds a separate module tree from a trained model (the trained model is not
modified). It runs the very rules of :mod:`spquant.deploy.fold` on float64 tensors holding
integers — exact, since :func:`~spquant.deploy.fold.analyze` proves every intermediate is far below
2^53 — so it is the bridge between the fake-quantized model (float) and the integer interpreter
(bit-identical spikes and logits).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import nn

from spquant.deploy.fold import fold_model
from spquant.deploy.program import DeployError, Program, analyze

__all__ = ["DeploySim", "deploy_sim", "lif_seq_sim"]

_EXACT = 2**53


def lif_seq_sim(
    cur: torch.Tensor,
    V: torch.Tensor,
    F: int,
    tau_shift: int,
    lb: int,
    ub: int,
    m0: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    prior: dict | None = None,
):
    """Deploy-sim LIF over [T, ...] float64 currents holding integers (fixed point, F bits):
    ``u = m * 2^(F-k) + I``, ``s = u > V``, ``m = 0 if s else clamp(floor((u + 2^(F-1)) / 2^F))``.
    Exact in float64 under the bounds proven by analyze(). Returns (spikes float64, last m)."""
    one = float(2**F)
    leak = float(2 ** (F - tau_shift))
    m = torch.zeros_like(cur[0]) if m0 is None else m0.to(torch.float64)
    spikes = []
    extra = (1,) * (cur.dim() - 3)
    for t in range(cur.shape[0]):
        i_t = cur[t]
        if gate is not None:  # learned channel gate [T, B, C]: current times 0/1
            i_t = i_t * gate[t].reshape(*gate[t].shape, *extra)
        if prior is not None and t > 0:  # membrane prior from the stored codes m_{t-1}
            if prior["prior_channel"]:
                sums = m.reshape(m.shape[0], m.shape[1], -1).sum(-1)
                i_t = i_t * (sums >= prior["prior_channel_min"]).to(torch.float64).reshape(
                    *sums.shape, *extra
                )
            if prior["prior_spatial"]:
                i_t = i_t * (m > prior["prior_spatial_level"]).to(torch.float64)
        u = m * leak + i_t
        s = u > V
        m = torch.where(s, torch.zeros_like(u), torch.floor((u + one / 2) / one).clamp(lb, ub))
        spikes.append(s.to(torch.float64))
    return torch.stack(spikes), m


class DeploySim(nn.Module):
    """Fixed-point simulation of a :class:`Program`.

    ``forward(x)`` takes the float input the trained model takes ([T, B, C, H, W], e.g. pixel/255),
    encodes it (the only float rounding) and returns the logits ``[T, B, classes]`` as float
    (integer logits / 2^F), so it drops in where the fake-quant model was. ``run_codes`` returns
    every named integer tensor (float64 holding integers).
    """

    def __init__(self, program: Program):
        super().__init__()
        self.program = program
        self.info = analyze(program)
        for n in program.nodes:
            for key in ("prod_max", "u_max", "max", "z_max"):
                if self.info[n["output"]].get(key, 0) >= _EXACT:
                    raise DeployError(
                        f"node {n['name']!r}: {key} bound exceeds 2^53, float64 simulation would not be exact"
                    )
        for name, arr in program.arrays.items():
            self.register_buffer(
                name.replace(".", "__"), torch.from_numpy(arr.astype(np.float64)), persistent=False
            )

    def _arr(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    @torch.no_grad()
    def run_codes(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Integer input codes [T, B, C, H, W] -> every named tensor (float64 holding integers)."""
        x = torch.as_tensor(codes).to(torch.float64)
        T, B = x.shape[:2]
        env = {self.program.input["name"]: x}
        for n in self.program.nodes:
            env[n["output"]] = _SIM_OPS[n["op"]](self, n, env[n["inputs"][0]], env, T, B)
        return env

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.program.encode_input(x))

    def integer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float input -> integer logits [T, B, classes] (int64)."""
        return self.run_codes(self.encode(x))[self.program.output].to(torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.integer_logits(x).to(torch.float64) / 2.0**self.program.frac_bits).to(torch.float32)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.integer_logits(x).sum(0).argmax(-1)


# ------------------------------------------------------------------------------------------------
# one handler per program op: (sim, node, first input, all tensors, T, B) -> output
# ------------------------------------------------------------------------------------------------
def _sim_affine(sim: DeploySim, n: dict, a: torch.Tensor, env: dict, T: int, B: int) -> torch.Tensor:
    flat = a.reshape(T * B, *a.shape[2:])
    w = sim._arr(n["weight"])
    if n["op"] == "conv":
        acc = Fn.conv2d(flat, w, stride=n["stride"], padding=n["padding"])
        shape = (1, -1, 1, 1)
    else:
        acc = flat @ w.T
        shape = (1, -1)
    S = int(n["shift"])
    r = 2.0 ** (S - 1) if S > 0 else 0.0
    cur = torch.floor((acc * sim._arr(n["M"]).view(shape) + sim._arr(n["B"]).view(shape) + r) / 2.0**S)
    return cur.reshape(T, B, *cur.shape[1:])


def _sim_scale_current(sim, n, a, env, T, B):
    return a * float(n["K"])


def _sim_add(sim, n, a, env, T, B):
    return a + env[n["inputs"][1]]


def _sim_channel_gate(sim, n, a, env, T, B):
    cnt = a.reshape(T * B, a.shape[2], -1).sum(-1)
    A = sim._arr(n["A"])
    if A.shape[1] == cnt.shape[1] + 1:  # removed silent channels (spquant.deploy.compact): count 0
        cnt = torch.nn.functional.pad(cnt, (0, 1))
    d = cnt.max(dim=1, keepdim=True).values - cnt
    kb, fe = int(n["lo_bits"]), int(n["exp_frac_bits"])
    hi = torch.floor(d / 2.0**kb)
    lo = d - hi * 2.0**kb
    E = torch.floor(
        (sim._arr(n["exp_hi"])[hi.long()] * sim._arr(n["exp_lo"])[lo.long()] + 2.0 ** (fe - 1)) / 2.0**fe
    )
    return (E @ A.T >= 0).to(torch.float64).reshape(T, B, -1)


def _sim_lif(sim, n, a, env, T, B):
    V = sim._arr(n["V"])
    V = V.view(-1, *([1] * (a.dim() - 3))) if V.numel() > 1 else V.view(())
    F, k, lb, ub = sim.program.frac_bits, int(n["tau_shift"]), int(n["lb"]), int(n["ub"])
    if n["op"] == "lif_pruned":
        gate = env[n["inputs"][1]] if len(n["inputs"]) > 1 else None
        y, _ = lif_seq_sim(a, V, F, k, lb, ub, gate=gate, prior=n)
    else:
        y, _ = lif_seq_sim(a, V, F, k, lb, ub)
    return y


def _sim_sumpool(sim, n, a, env, T, B):
    k = int(n["kernel"])
    C, H, W = a.shape[2:]
    return a.reshape(T, B, C, H // k, k, W // k, k).sum(dim=(4, 6))


def _sim_maxpool(sim, n, a, env, T, B):
    k = int(n["kernel"])
    C, H, W = a.shape[2:]
    return a.reshape(T, B, C, H // k, k, W // k, k).amax(dim=(4, 6))


def _sim_gsumpool(sim, n, a, env, T, B):
    return a.sum(dim=(3, 4))


def _sim_flatten(sim, n, a, env, T, B):
    return a.reshape(T, B, -1)


_SIM_OPS = {
    "conv": _sim_affine,
    "linear": _sim_affine,
    "scale_current": _sim_scale_current,
    "add": _sim_add,
    "channel_gate": _sim_channel_gate,
    "lif": _sim_lif,
    "lif_pruned": _sim_lif,
    "sumpool": _sim_sumpool,
    "maxpool": _sim_maxpool,
    "gsumpool": _sim_gsumpool,
    "flatten": _sim_flatten,
}


def deploy_sim(model: nn.Module, input_shape, **fold_kwargs) -> DeploySim:
    """Build the deploy-simulation module of a trained model (see :func:`fold_model` for kwargs)."""
    return DeploySim(fold_model(model, input_shape, **fold_kwargs))
