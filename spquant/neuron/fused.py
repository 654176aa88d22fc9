"""The fused LIF recurrence: one autograd function with a hand-written BPTT backward.

:func:`lif_fused` computes exactly what :func:`spquant.neuron.lif_reference` computes (same float
operations in the same order, so the forward is bit-identical) but records a single node in the
autograd graph instead of ~8 per time step, and saves far less for the backward pass:

* the reference keeps, per step, ``x = u - V_th`` (spike), ``1 - s`` and ``u`` (reset product) and
  ``r`` (membrane quantizer): four float tensors per neuron-step;
* the fused function keeps only the membrane potential ``u_t`` before the spike (one float per
  neuron-step, written into one preallocated ``[T, ...]`` buffer). Everything else is recomputed
  from it in the backward pass: ``x_t = u_t - V_th``, ``s_t = H(x_t)``, ``r_t = (1 - s_t) u_t``.
  Storing ``u_t`` (4 bytes) is cheaper than the alternative of storing the current, the int8
  membrane codes and uint8 spikes (4 + 1 + 1 bytes) and needs no sequential recomputation.
* only when they are needed: the ungated current (when a learned gate requires a gradient), the
  prior's keep masks (as ``bool`` when they are {0,1}, which they are), the gate itself.

Backward (per step, from t = T-1 down to 0; ``gs``: incoming gradient of the spikes, ``gm``: of the
returned membrane, if any)::

    dm_t  = tau * du_{t+1} + gm_t                 (dm_{T-1} = gm_{T-1})
    dr_t  = dm_t * Q'(r_t)                        (Q' = 1 for the FP32 membrane)
    ds_t  = gs_t - dr_t * u_t                     (r = (1 - s) u)
    dx_t  = ds_t * surrogate'(x_t)
    du_t  = dr_t * (1 - s_t) + dx_t
    dI_t  = du_t                                  (gated current; dcurrent = dI * gate * keep)
    dV_th = - sum_t sum( dx_t * (1 + sigmoid(x_t) * 1[x_t >= 0]) )   (learnable threshold, summed to V_th's shape)

(``dx_t`` and the per-step ``dV_th`` term come from :func:`spquant.neuron.surrogate.spike_backward`, so
the spike surrogate and the threshold path have one implementation shared with the reference.)
    dgate = sum_to_gate_shape( dI_t * keep_t * current_t )            (straight-through gates)

The prior's keep mask is a decision (a comparison on the stored state) and gets no gradient, exactly
as in the reference where it comes from a comparison.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

from spquant.neuron.surrogate import Triangle, spike_backward, sum_to_shape
from spquant.quant import IntegerMembrane

__all__ = ["lif_fused", "compact_spikes"]

# -- compact storage of spikes saved by *other* ops (conv, pooling) ------------------------------
# Inside ``compact_spikes()`` the spike tensors returned by lif_fused are registered (by object,
# with a weak reference and their version counter); when autograd saves one of them, or a view of
# one (the conv's folded reshape, the pooling's input), it is stored as bool and restored to the
# float dtype for backward: exact, since spikes are 0./1., and 4x smaller.
_spike_registry: dict[int, tuple] = {}
_compact_depth = 0


def _register_spikes(spikes: torch.Tensor) -> None:
    for key in [k for k, (ref, _) in _spike_registry.items() if ref() is None]:
        del _spike_registry[key]
    _spike_registry[id(spikes)] = (weakref.ref(spikes), spikes._version)


def _pack(t: torch.Tensor):
    base = t if t._base is None else t._base
    entry = _spike_registry.get(id(base))
    if entry is not None and entry[0]() is base and base._version == entry[1] and t.dtype.is_floating_point:
        return (_PACKED, t.to(torch.bool), t.dtype)
    return t


def _unpack(p):
    if isinstance(p, tuple) and p and p[0] is _PACKED:
        return p[1].to(p[2])
    return p


_PACKED = object()


@contextlib.contextmanager
def compact_spikes():
    """Context manager for the forward pass of training: spikes that other ops save for backward
    (the next conv's input, a pooling layer's input) are kept as ``bool`` instead of float (4x less
    memory, exact). Nesting is fine.

    Example::

        >>> import torch
        >>> from spquant import LIF
        >>> lif, x = LIF(), torch.randn(4, 2, 8, requires_grad=True)
        >>> with compact_spikes():
        ...     loss = (lif(x) * 2).sum()   # the mul saves nothing here; convs/pools would save bool
        >>> loss.backward()
    """
    global _compact_depth
    _compact_depth += 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _compact_depth -= 1
        if _compact_depth == 0:
            _spike_registry.clear()


def _compact_mask(keep: torch.Tensor) -> torch.Tensor:
    """A keep mask stored for backward: ``bool`` when it only holds {0, 1} (4-8x smaller)."""
    if keep.dtype == torch.bool:
        return keep
    if bool(((keep == 0) | (keep == 1)).all()):
        return keep.to(torch.bool)
    return keep


def _membrane_grad(membrane, r: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    """dm * Q'(r). For the stacked surrogate of :class:`IntegerMembrane` this is
    ``k * sum_c sigmoid_backward(dm, sigmoid(k r - k c))``: the same maths as
    ``dm * membrane.derivative(r)`` in about 10 element-wise passes instead of 16."""
    if type(membrane) is not IntegerMembrane or membrane.grad != "stacked":
        return dm * membrane.derivative(r)
    k = membrane.k
    kr = r * k
    total = None
    for c in membrane.surrogate.boundaries:
        sg = torch.sigmoid_(kr - k * c)
        term = torch.ops.aten.sigmoid_backward(dm, sg)
        total = term if total is None else total.add_(term)
    return total.mul_(k)


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, threshold, gate, tau, membrane, surrogate, prior, return_membrane):
        T = current.shape[0]
        step_shape = current.shape[1:]
        dtype = current.dtype
        # membrane potential before the spike, all steps: the only float tensor kept for backward
        u_all = torch.empty_like(current, memory_format=torch.contiguous_format)
        spikes = torch.empty_like(u_all)
        mems = torch.empty_like(u_all) if return_membrane else None
        m = torch.zeros(step_shape, dtype=dtype, device=current.device)
        x = torch.empty_like(m)
        one_minus_s = torch.empty_like(m)
        keeps = []
        fast_q = type(membrane) is IntegerMembrane
        lb, ub = (membrane.lb, membrane.ub) if fast_q else (None, None)
        for t in range(T):
            i_t = current[t]
            if gate is not None:
                i_t = i_t * gate[t if gate.shape[0] > 1 else 0]
            keep = None
            if prior is not None and t > 0:
                # a copy: m is a reused buffer and a prior may keep what it is given
                keep = prior.keep_mask(m.clone(), membrane)
                if keep is not None:
                    i_t = i_t * keep
            keeps.append(None if keep is None else _compact_mask(keep.detach()))
            u = u_all[t]
            torch.mul(m, tau, out=u)  # u = tau * m + i  (the reference's op order)
            u.add_(i_t)
            torch.sub(u, threshold, out=x)
            s = spikes[t]
            torch.gt(x, 0, out=s)  # H(x) written as 0./1. in the float dtype
            torch.neg(s, out=one_minus_s).add_(1)  # 1 - s (exact for s in {0, 1})
            torch.mul(one_minus_s, u, out=m)  # r = (1 - s) * u
            if fast_q:
                m.clamp_(lb, ub).add_(0.5).floor_()  # == IntegerMembrane.quantize, in place
            elif membrane is not None:
                m = membrane.quantize(m)
            if mems is not None:
                mems[t].copy_(m)
        ctx.tau = tau
        ctx.membrane = membrane
        ctx.surrogate = surrogate
        ctx.keeps = keeps
        ctx.return_membrane = return_membrane
        ctx.gate_is_none = gate is None
        ctx.th_shape = threshold.shape
        need_current = gate is not None and ctx.needs_input_grad[2]
        ctx.save_for_backward(
            u_all,
            threshold,
            gate if gate is not None else None,
            current if need_current else None,
        )
        if mems is not None:
            return spikes, mems
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes, grad_mems=None):
        u_all, threshold, gate, current = ctx.saved_tensors
        tau, membrane, surrogate = ctx.tau, ctx.membrane, ctx.surrogate
        need_i, need_th, need_g = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        T = u_all.shape[0]
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(u_all)
        d_cur = torch.empty_like(u_all)  # dL/dI_gated per step, turned into dL/dcurrent at the end
        grad_th = None
        th_shape = ctx.th_shape if need_th else None
        d_gate = torch.zeros_like(gate) if need_g else None
        dm = None
        for t in reversed(range(T)):
            u = u_all[t]
            x = u - threshold
            s = x > 0
            gs = grad_spikes[t]
            if grad_mems is not None:
                dm = grad_mems[t].clone() if dm is None else dm.add_(grad_mems[t])
            du = d_cur[t]
            if dm is not None:
                if membrane is None:
                    dr = dm
                else:
                    r = torch.where(s, torch.zeros((), dtype=u.dtype, device=u.device), u)
                    dr = _membrane_grad(membrane, r, dm)
                ds = gs - dr * u
            else:
                ds = gs
            # the spike's surrogate and the threshold path (docs/method.md#learnable-threshold): one implementation
            dx, dv = spike_backward(x, ds, surrogate, th_shape)
            if dv is not None:
                grad_th = dv if grad_th is None else grad_th.add_(dv)
            if dm is not None:
                torch.add(dx, dr.masked_fill_(s, 0), out=du)  # dr * (1 - s) + dx
            else:
                du.copy_(dx)
            dm = du * tau
        grad_current = grad_gate = None
        keeps = ctx.keeps
        if need_g:
            for t in range(T):
                g_t = d_cur[t] * current[t]
                if keeps[t] is not None:
                    g_t = g_t * keeps[t]
                gi = t if gate.shape[0] > 1 else 0
                d_gate[gi] += sum_to_shape(g_t, gate.shape[1:])
            grad_gate = d_gate
        if need_i:
            if gate is not None:
                d_cur.mul_(gate)
            for t in range(T):
                if keeps[t] is not None:
                    d_cur[t].mul_(keeps[t])
            grad_current = d_cur
        return grad_current, grad_th, grad_gate, None, None, None, None, None


def lif_fused(
    current: torch.Tensor,
    threshold: torch.Tensor,
    tau: float = 0.5,
    membrane=None,
    surrogate=None,
    gate: torch.Tensor | None = None,
    prior=None,
    return_membrane: bool = False,
):
    """Same signature, results and return convention as :func:`spquant.neuron.lif_reference`.

    The forward is bit-identical to the reference; gradients (current, threshold — scalar or
    per-channel — and a gate that requires grad) equal it to float rounding. Peak training memory is
    about half of the reference's per LIF layer (see ``docs/performance.md``).

    Example::

        >>> import torch
        >>> from spquant.neuron import lif_reference
        >>> from spquant.quant import IntegerMembrane
        >>> x = torch.randn(4, 2, 3)
        >>> th = torch.tensor(1.0)
        >>> torch.equal(lif_fused(x, th, membrane=IntegerMembrane()), lif_reference(x, th, membrane=IntegerMembrane()))
        True
    """
    surrogate = surrogate or Triangle()
    if not torch.is_tensor(threshold):
        threshold = torch.tensor(float(threshold), dtype=current.dtype, device=current.device)
    if gate is not None and gate.dim() != current.dim():
        raise ValueError(f"gate must have as many dims as the current ({current.dim()}), got {tuple(gate.shape)}")
    out = _FusedLIF.apply(current, threshold, gate, float(tau), membrane, surrogate, prior, bool(return_membrane))
    if _compact_depth:
        _register_spikes(out[0] if return_membrane else out)
    return out
