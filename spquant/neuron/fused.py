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

The membrane prior runs inside the time loop. A prior with ``split_keep`` (``MembranePrior``) hands
its decision over in two parts: the channel part, a bool per (sample, channel), is folded into the
small per-channel gate (``g * ch``), so it costs no pass over the neurons; the spatial part is one
comparison written as 0./1. into a reused buffer, multiplied into the current inside the
``u = tau m + I`` update (one multiply-add) and saved as ``bool`` (a float -> bool copy, cheap on
CPUs where bool -> float and bool arithmetic are not: the backward reads it back through ``uint8``).
Any other prior goes through ``keep_mask`` (a float mask, separate multiplications).

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

import torch

from spquant.neuron.surrogate import Triangle, spike_backward, sum_to_shape
from spquant.quant import IntegerMembrane

__all__ = ["lif_fused", "compact_spikes", "spikes_saved_compactly", "is_spike_tensor", "compile_kernels"]

# -- compact storage of spikes saved by *other* ops (conv, pooling) ------------------------------
# The spike tensor returned by lif_fused carries a mark: its version counter at creation. When
# autograd saves it, or a view of it (the conv's folded reshape, the pooling's input), while it is
# unchanged, the saved-tensor hook below stores it as bool and restores the float dtype for backward:
# exact, since spikes are 0./1., and 4x smaller. The blocks that consume spikes (ConvBNLIF,
# SeqModule) switch the hook on around themselves (:func:`spikes_saved_compactly`), so this is the
# default; ``compact_spikes()`` switches it on for a whole forward pass.
_SPIKE_MARK = "_spquant_spikes_version"
_builtin_compact = {"enabled": True}  # benchmarks switch it off to measure what it saves


def _mark_spikes(spikes: torch.Tensor) -> None:
    setattr(spikes, _SPIKE_MARK, spikes._version)


def is_spike_tensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is (a view of) an unmodified spike tensor of :func:`lif_fused` (values 0./1.)."""
    base = t if t._base is None else t._base
    return t.dtype.is_floating_point and getattr(base, _SPIKE_MARK, None) == base._version


def _pack(t: torch.Tensor):
    if is_spike_tensor(t):
        return (_PACKED, t.to(torch.bool), t.dtype)
    return t


def _unpack(p):
    if isinstance(p, tuple) and p and p[0] is _PACKED:
        return p[1].to(p[2])
    return p


_PACKED = object()


def spikes_saved_compactly(x: torch.Tensor):
    """Context for the ops of a layer that consumes ``x``: if ``x`` is a spike tensor of the fused
    LIF, what they save of it for backward is stored as ``bool``. (A no-op context otherwise.)"""
    if _builtin_compact["enabled"] and torch.is_grad_enabled() and is_spike_tensor(x):
        return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
    return contextlib.nullcontext()


@contextlib.contextmanager
def compact_spikes():
    """Context manager for a whole forward pass: every spike tensor of the fused LIF that an op saves
    for backward is kept as ``bool`` instead of float (4x less memory, exact). ``ConvBNLIF`` and
    ``SeqModule`` already do this for what they save; this also covers other consumers. Nesting is
    fine.

    Example::

        >>> import torch
        >>> from spquant import LIF
        >>> lif, x = LIF(), torch.randn(4, 2, 8, requires_grad=True)
        >>> with compact_spikes():
        ...     loss = (lif(x) * 2).sum()   # the mul saves nothing here; convs/pools would save bool
        >>> loss.backward()
    """
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        yield


def _compact_mask(keep: torch.Tensor) -> torch.Tensor:
    """A keep mask stored for backward: ``bool`` when it only holds {0, 1} (4-8x smaller)."""
    if keep.dtype == torch.bool:
        return keep
    if bool(((keep == 0) | (keep == 1)).all()):
        return keep.to(torch.bool)
    return keep


class _Workspace:
    """Step-sized scratch tensors, allocated once per backward call and reused by every step (a fresh
    tensor per op and step costs an allocation and, for large ones, page faults on first touch)."""

    def __init__(self, like: torch.Tensor):
        self.like, self.bufs = like, {}

    def __call__(self, name: str, dtype=None) -> torch.Tensor:
        buf = self.bufs.get(name)
        if buf is None:
            buf = self.bufs[name] = torch.empty_like(
                self.like, dtype=dtype, memory_format=torch.contiguous_format
            )
        return buf


def _stacked(membrane) -> bool:
    return type(membrane) is IntegerMembrane and membrane.grad == "stacked"


def _membrane_grad(membrane, u, no_spike, dm: torch.Tensor, ws: _Workspace) -> torch.Tensor:
    """dm * Q'(r) at r = (1 - s) u = u * no_spike. For the stacked surrogate of
    :class:`IntegerMembrane` this is ``k * sum_c sigmoid_backward(dm, sigmoid(k r - k c))``, the same
    maths as ``dm * membrane.derivative(r)`` in about 8 element-wise passes instead of 17, in scratch
    buffers; each ``k r - k c`` is one multiply-add of ``u`` and the mask (the same floats as
    ``(u * no_spike) * k - k c``: the mask's product is exact), and the factor ``k`` is left to the
    caller, which folds it into ``dm``."""
    if not _stacked(membrane):
        return dm * membrane.derivative(torch.mul(u, no_spike, out=ws("r")))
    k = membrane.k
    total = ws("dq")
    for i, c in enumerate(membrane.surrogate.boundaries):
        offset = torch.full((), -k * c, dtype=u.dtype, device=u.device)
        z = torch.addcmul(offset, u, no_spike, value=k, out=ws("z")).sigmoid_()
        if i == 0:
            torch.ops.aten.sigmoid_backward.grad_input(dm, z, grad_input=total)
        else:
            total.add_(torch.ops.aten.sigmoid_backward.grad_input(dm, z, grad_input=z))
    return total


# -- the per-step kernels of the compiled path ---------------------------------------------------
# Pure functions of one time step, written op for op like the reference (so the forward stays
# bit-identical: inductor compiles with -ffp-contract=off, no fused multiply-add), each compiled by
# torch.compile into one loop over the neurons instead of ~10 (forward) / ~25 (backward) passes
# over memory. Opt-in (see :func:`compile_kernels`): compiling costs tens of seconds per process.


def _forward_step(m, i, gate, keep, threshold, tau: float, lb, ub, u_out, s_out):
    if gate is not None:
        i = i * gate
    if keep is not None:
        i = i * keep
    u = tau * m + i
    s = ((u - threshold) > 0).to(u.dtype)
    m = (1 - s) * u
    if lb is not None:
        m = torch.floor(torch.clamp(m, lb, ub) + 0.5)
    u_out.copy_(u)
    s_out.copy_(s)
    return m


def _backward_step(u, threshold, gs, dm, membrane, surrogate, th_shape, tau, du_out):
    """One BPTT step: writes dL/dI_gated into ``du_out``, returns (threshold grad, dm of the step
    before)."""
    x = u - threshold
    s = x > 0
    if dm is not None:
        if membrane is None:
            dr = dm
        else:
            dr = dm * membrane.derivative(torch.where(s, 0.0, u))
        ds = gs - dr * u
    else:
        ds = gs
    dx, grad_th = spike_backward(x, ds, surrogate, th_shape)
    du = dx + torch.where(s, 0.0, dr) if dm is not None else dx
    du_out.copy_(du)
    return grad_th, du * tau


_compile = {"enabled": False, "forward": None, "backward": None}


def compile_kernels(enabled: bool = True) -> None:
    """Run the fused LIF's time steps through ``torch.compile``d kernels (``enabled=True``) or the
    hand-tuned eager loop (default).

    The compiled kernels give the same forward (bit-identical, tested) and the same gradients (to
    float rounding) and make the neuron's share of a training step several times cheaper, but
    compiling takes tens of seconds to minutes per process (cached on disk by inductor for later
    runs): worth it for training runs, not for short jobs. Needs a C++ compiler (CPU) or Triton
    (CUDA). Also switched on by ``SPQUANT_COMPILE=1`` through :func:`spquant.perf.configure_from_env`.
    """
    _compile["enabled"] = bool(enabled)


def kernels_compiled() -> bool:
    return _compile["enabled"]


def _kernel(name: str):
    fn = {"forward": _forward_step, "backward": _backward_step}[name]
    if not _compile["enabled"]:
        return fn
    if _compile[name] is None:
        _compile[name] = torch.compile(fn, dynamic=True)
    return _compile[name]


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
        # per step: None (nothing skipped) or (channel keep, spatial keep) for the backward pass
        keeps = []
        keep_masks = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        fast_q = type(membrane) is IntegerMembrane
        lb, ub = (membrane.lb, membrane.ub) if fast_q else (None, None)
        step = _kernel("forward") if (fast_q or membrane is None) and _compile["enabled"] else None
        # a prior with split_keep gives its decision as a per-channel bool and a float spatial
        # mask (see _prior_masks); any other prior goes through keep_mask
        split = getattr(prior, "split_keep", None)
        gated = None if (gate is None and prior is None) or step is not None else torch.empty_like(m)
        spatial = None
        for t in range(T):
            i_t = current[t]
            g_t = None if gate is None else gate[t if gate.shape[0] > 1 else 0]
            ch = sp = None
            if prior is not None and t > 0:
                if split is not None and spatial is None:
                    spatial = torch.empty_like(m)
                ch, sp = _prior_masks(prior, split, m, membrane, spatial)
                if ch is NotImplemented:  # keep_mask's float mask, from now on
                    split, ch = None, None
                    keeps.append(None if sp is None or not keep_masks else (None, _compact_mask(sp)))
                else:
                    saved = None
                    if sp is not None and keep_masks:  # float -> bool is cheap, bool -> float is not
                        saved = torch.empty(step_shape, dtype=torch.bool, device=m.device).copy_(sp)
                    keeps.append(None if ch is None and sp is None else (ch, saved))
            else:
                keeps.append(None)
            u, s = u_all[t], spikes[t]
            # u = tau * m + (I * g) * keep, keep = ch & sp (the reference's order), computed as
            # tau * m + (I * (g * ch)) * sp: the channel prior folded into the small gate. The same
            # floats: a product with a 0./1. factor is exact (the one rounding, of I * g, is the same
            # in both orders), so the eager path's multiply-add rounds once, like the reference's add.
            f = g_t
            if ch is not None:
                f = ch.to(dtype) if f is None else f * ch
            if step is not None:
                m = step(m, i_t, f, sp, threshold, tau, lb, ub, u, s)
            else:
                if f is not None:
                    i_t = torch.mul(i_t, f, out=gated)
                if sp is not None and split is None:  # keep_mask's mask, not known to be {0, 1}
                    i_t, sp = (i_t.mul_(sp) if i_t is gated else torch.mul(i_t, sp, out=gated)), None
                torch.mul(m, tau, out=u)
                if sp is not None:
                    u.addcmul_(i_t, sp)
                else:
                    u.add_(i_t)
                torch.sub(u, threshold, out=s)
                torch.gt(s, 0, out=s)  # H(u - V_th) written as 0./1. in the float dtype
                # r = (1 - s) u as u - s u: exact for s in {0, 1}, one pass instead of three. A fresh
                # tensor when a prior's keep_mask looks at it (it may keep what it is given), else reused.
                m = torch.addcmul(u, s, u, value=-1, out=None if prior is not None and split is None else m)
                if fast_q:
                    m.clamp_(lb, ub).add_(0.5).floor_()  # == IntegerMembrane.quantize, in place
                elif membrane is not None:
                    m = membrane.quantize(m)
            if mems is not None:
                mems[t].copy_(m)
        ctx.tau = tau
        ctx.membrane = membrane
        ctx.surrogate = surrogate
        ctx.keeps = keeps if keep_masks else [None] * T
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
        dm = None
        d_gate = torch.zeros_like(gate) if need_g else None
        g_shape = None if gate is None else gate.shape[1:]
        if _compile["enabled"]:
            step = _kernel("backward")
            for t in reversed(range(T)):
                if grad_mems is not None:
                    dm = grad_mems[t].clone() if dm is None else dm.add_(grad_mems[t])
                args = (u_all[t], threshold, grad_spikes[t], dm, membrane, surrogate, th_shape, tau)
                dv, dm = step(*args, d_cur[t])
                if dv is not None:
                    grad_th = dv if grad_th is None else grad_th.add_(dv)
        else:
            grad_th = _backward_eager(ctx, u_all, threshold, grad_spikes, grad_mems, d_cur, th_shape)
        grad_current = grad_gate = None
        if need_g or need_i:
            ws = _Workspace(u_all[0])
            for t in range(T):
                ch, sp = ctx.keeps[t] or (None, None)
                d = d_cur[t]  # dL/dI_gated -> (* sp) -> dL/dcurrent = dL/dI_gated * g * ch * sp
                if sp is not None:
                    d.mul_(_float_mask(sp, d, ws))
                g_t = None if gate is None else gate[t if gate.shape[0] > 1 else 0]
                if need_g:  # dL/dg = sum_to_gate_shape(dL/dI_gated * current * keep)
                    prod = torch.mul(d, current[t], out=ws("prod"))
                    if ch is not None and not _sums_keep(ch.shape, g_shape):
                        prod.mul_(ch)
                        ch_after = None
                    else:
                        ch_after = ch  # constant over what the sum reduces: applied to the sum
                    red = sum_to_shape(prod, g_shape)
                    if ch_after is not None:
                        red = red * ch_after
                    d_gate[t if gate.shape[0] > 1 else 0] += red
                if need_i:
                    f = g_t
                    if ch is not None:
                        f = ch.to(d.dtype) if f is None else f * ch
                    if f is not None:
                        d.mul_(f)
            grad_gate = d_gate
            grad_current = d_cur if need_i else None
        return grad_current, grad_th, grad_gate, None, None, None, None, None


def _prior_masks(prior, split, m, membrane, out):
    """``(channel keep, spatial keep)`` of the prior at one step: from ``split_keep`` (a bool
    [B, C, 1, ...] and a 0./1. float mask written into ``out``) when the prior has it, else
    ``(NotImplemented, keep_mask(...))``."""
    if split is not None:
        res = split(m, membrane, out=out)
        if res is not NotImplemented:
            return res
    return NotImplemented, prior.keep_mask(m, membrane)


def _float_mask(mask: torch.Tensor, like: torch.Tensor, ws: _Workspace) -> torch.Tensor:
    """A saved keep mask as 0./1. in ``like``'s dtype (a full-size bool goes through uint8, whose
    conversion to float is vectorized on CPUs where bool's is not)."""
    if mask.dtype == like.dtype:
        return mask
    if mask.dtype == torch.bool and mask.shape == like.shape:
        return ws("keep").copy_(mask.view(torch.uint8))
    return mask.to(like.dtype)


def _sums_keep(ch_shape, g_shape) -> bool:
    """Whether summing a step's gradient to the gate's shape leaves the channel mask's dims alone
    (then the mask can multiply the small sum instead of the full product)."""
    return all(c == 1 or g == c for c, g in zip(ch_shape, g_shape))


def _backward_eager(ctx, u_all, threshold, grad_spikes, grad_mems, d_cur, th_shape):
    """The BPTT loop of the module docstring, eager, in scratch buffers reused over the steps. The
    triangle surrogate and the threshold path are computed in place here; any other surrogate goes
    through :func:`spquant.neuron.surrogate.spike_backward` (the single implementation of the maths,
    which the compiled kernel and the reference use)."""
    tau, membrane, surrogate = ctx.tau, ctx.membrane, ctx.surrogate
    ws = _Workspace(u_all[0])
    triangle = type(surrogate) is Triangle
    grad_th = None
    dm = dm_k = None
    # dm_k: dm times the stacked surrogate's slope k (_membrane_grad leaves that factor to us)
    k = membrane.k if _stacked(membrane) else 1.0
    for t in reversed(range(u_all.shape[0])):
        u = u_all[t]
        x = torch.sub(u, threshold, out=ws("x"))
        # 1 - s_t as a float 0./1. mask: multiplying by it is much faster than masked_fill_ on CPUs
        no_spike = torch.le(x, 0, out=ws("no_spike"))
        gs = grad_spikes[t]
        if grad_mems is not None:
            dm = grad_mems[t].clone() if dm is None else dm.add_(grad_mems[t])
            dm_k = dm if k == 1.0 else torch.mul(dm, k, out=ws("dm_k"))
        du = d_cur[t]
        if dm is not None:
            if membrane is None:
                dr = dm
            else:
                dr = _membrane_grad(membrane, u, no_spike, dm_k, ws)
            ds = torch.addcmul(gs, dr, u, value=-1, out=ws("ds"))  # gs - dr * u
        else:
            ds = gs
        if triangle:  # dx = ds * max(0, gamma - |x|) / gamma^2
            g = surrogate.gamma
            d = torch.abs(x, out=ws("d")).neg_().add_(g).clamp_min_(0)
            if g != 1.0:
                d.div_(g * g)
            dx = d.mul_(ds)
            dv = None
            if th_shape is not None:  # - sum(dx (1 + sigmoid(x) 1[x >= 0])), summed to V_th's shape
                w = torch.sigmoid(x, out=ws("w")).mul_(torch.ge(x, 0, out=ws("nonneg")))
                if len(th_shape) == 0 or threshold.numel() == 1:
                    dv = -(dx.sum() + torch.dot(dx.view(-1), w.view(-1))).reshape(th_shape)
                else:
                    dv = sum_to_shape(torch.addcmul(dx, dx, w, out=w), th_shape).neg()
        else:
            dx, dv = spike_backward(x, ds, surrogate, th_shape)
        if dv is not None:
            grad_th = dv if grad_th is None else grad_th.add_(dv)
        if dm is not None:
            torch.add(dx, dr.mul_(no_spike), out=du)  # dr * (1 - s) + dx
        else:
            du.copy_(dx)
        if k == 1.0 or grad_mems is not None:
            dm = dm_k = torch.mul(du, tau, out=ws("dm"))  # dm_k from it at the next step
        else:  # only dm * k is used: one pass
            dm = dm_k = torch.mul(du, tau * k, out=ws("dm_k"))
    return grad_th


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
        raise ValueError(
            f"gate must have as many dims as the current ({current.dim()}), got {tuple(gate.shape)}"
        )
    out = _FusedLIF.apply(
        current, threshold, gate, float(tau), membrane, surrogate, prior, bool(return_membrane)
    )
    _mark_spikes(out[0] if return_membrane else out)
    return out
