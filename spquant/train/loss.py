"""TET loss (docs/method.md#loss): a cross-entropy at every time step plus an MSE regulariser of the logits.

.. math::
    L = (1 - \\lambda)\\,\\frac{1}{T}\\sum_t CE(o_t, y) + \\lambda\\,\\frac{1}{T}\\sum_t MSE(o_t, \\phi)

``phi`` is 1.0 (the TET paper) or the mean learnable threshold over the model's LIF layers
(docs/method.md#learnable-threshold, "optional coupling"); then the regulariser also trains the thresholds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["tet_loss", "distill_loss", "mean_threshold", "resolve_phi"]


def tet_loss(
    outputs: torch.Tensor, target: torch.Tensor, lam: float = 0.05, phi: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """TET loss of per-step logits ``outputs`` [T, B, K] against class indices ``target`` [B].

    Example::

        >>> import torch
        >>> o = torch.zeros(2, 1, 3); y = torch.tensor([0])
        >>> round(float(tet_loss(o, y, lam=0.0)), 4)          # CE of uniform logits = ln 3
        1.0986
        >>> float(tet_loss(o, y, lam=1.0, phi=1.0))           # MSE of 0 against 1
        1.0
    """
    if outputs.dim() != 3:
        raise ValueError(f"tet_loss expects per-step logits [T, B, K], got shape {tuple(outputs.shape)}")
    T, B, K = outputs.shape
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    # mean over t of CE(o_t, y): fold T into the batch; CE's mean over T*B equals the mean of the T means
    ce = F.cross_entropy(outputs.reshape(T * B, K), target.repeat(T))
    if lam == 0.0:
        return ce
    phi_t = torch.as_tensor(phi, dtype=outputs.dtype, device=outputs.device)
    mse = ((outputs - phi_t) ** 2).mean()  # mean over t of MSE(o_t, phi), all the same size
    return (1.0 - lam) * ce + lam * mse


def distill_loss(outputs: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Knowledge distillation from a teacher SNN's per-step logits, step by step.

    .. math:: KD = \frac{\tau^2}{T} \sum_t \frac{1}{B} \sum_b
              KL\big(\mathrm{softmax}(z_{t,b}/\tau) \,\|\, \mathrm{softmax}(o_{t,b}/\tau)\big)

    ``outputs`` (student) and ``teacher`` are [T, B, K]; a teacher with a different T is compared
    through its mean over time (the same target at every step). The teacher is detached. The
    ``tau^2`` factor keeps the gradient scale independent of the temperature (Hinton et al.).

    Example::

        >>> import torch
        >>> o = torch.zeros(2, 1, 2); z = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]]])
        >>> float(distill_loss(o, z))                          # same distribution: KL = 0
        0.0
    """
    if outputs.dim() != 3 or teacher.dim() != 3 or outputs.shape[1:] != teacher.shape[1:]:
        raise ValueError(
            f"distill_loss expects [T, B, K] logits of the same B, K; got {tuple(outputs.shape)} and {tuple(teacher.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher = teacher.detach()
    if teacher.shape[0] != outputs.shape[0]:
        teacher = teacher.mean(0, keepdim=True).expand_as(outputs)
    T, B, K = outputs.shape
    log_p = F.log_softmax(outputs.reshape(T * B, K) / temperature, dim=-1)
    log_q = F.log_softmax(teacher.reshape(T * B, K) / temperature, dim=-1)
    kl = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)  # mean over the T*B rows
    return kl * temperature**2


def mean_threshold(model: nn.Module) -> torch.Tensor:
    """Mean V_th over the model's LIF layers (per-channel thresholds are averaged first)."""
    from spquant.neuron import SpikingNeuron

    vals = [m.threshold.mean() for m in model.modules() if isinstance(m, SpikingNeuron)]
    if not vals:
        raise ValueError("phi='threshold' needs a model with LIF layers")
    return torch.stack(vals).mean()


def resolve_phi(phi: str | float, model: nn.Module) -> float | torch.Tensor:
    """``phi`` of the config: a number, ``'one'`` (1.0) or ``'threshold'`` (mean V_th, differentiable)."""
    if isinstance(phi, (int, float)) and not isinstance(phi, bool):
        return float(phi)
    if phi == "one":
        return 1.0
    if phi == "threshold":
        return mean_threshold(model)
    raise ValueError(f"phi must be a number, 'one' or 'threshold', got {phi!r}")
