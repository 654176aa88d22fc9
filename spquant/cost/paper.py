"""The authors' released "FLOPs reduction" accounting (the authors' convention), reproduced as
written for comparison with the paper's figures; never our headline (see docs/pruning_and_cost.md).

It is a heuristic ratio, not a MAC count. Summed over gated layers and evaluation batches, with
``B`` the batch size, ``T`` the time steps, the layer output shaped ``[B, T, C_out, H, W]`` and
``kvol = C_in * k^2``:

* ``conv_dense = B * T * (C_out * H) * kvol``  (``C_out * H``, not ``H * W``: as written);
* ``conv_kept = B * (sum over t of the fraction of active output channels) * (C_out * H) * kvol``;
* per step t: ``mem_dense = B * (B * T * C_out) * H * W`` and
  ``mem_kept = B * (active gate entries over [B, T, C_out]) * H * W * (1 - z_t)``, ``z_t`` = the
  fraction of stored membrane codes equal to 0 after step t;
* ``predictor = 2 * C_in' * C_out * H' * W'`` per predictor call (``C_in', H', W'`` of its input);
* ``reduction = (conv_dense + mem_dense) / (conv_kept + mem_kept + predictor)``.

The factor B on the membrane terms makes them dominate, so the figure depends on the batch size:
always report the B used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PaperTerms", "paper_convention_terms", "paper_convention_reduction"]


@dataclass
class PaperTerms:
    conv_dense: float = 0.0
    conv_kept: float = 0.0
    mem_dense: float = 0.0
    mem_kept: float = 0.0
    predictor: float = 0.0

    def __add__(self, other: PaperTerms) -> PaperTerms:
        return PaperTerms(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def reduction(self) -> float:
        den = self.conv_kept + self.mem_kept + self.predictor
        return (self.conv_dense + self.mem_dense) / den if den else float("inf")

    def as_dict(self) -> dict:
        return asdict(self)


def paper_convention_terms(
    B: int,
    T: int,
    c_out: int,
    h: int,
    w: int,
    kvol: int,
    active_fraction_by_step: list[float],
    active_entries: int,
    zero_fraction_by_step: list[float],
    predictor_input: tuple[int, int, int] | None = None,
    predictor_calls: int = 1,
) -> PaperTerms:
    """The terms of one gated layer on one evaluation batch.

    ``active_fraction_by_step[t]``: fraction of the [B, C_out] output channels active at step t;
    ``active_entries``: active gate entries over the whole [B, T, C_out]; ``zero_fraction_by_step[t]``:
    fraction of stored membrane codes equal to 0 after step t; ``predictor_input``: (C_in', H', W')
    of the predictor's input, None for a layer without a learned predictor.

    >>> t = paper_convention_terms(2, 2, 4, 3, 3, 18, [1.0, 0.5], 12, [0.5, 0.25], (2, 5, 5))
    >>> (t.conv_dense, t.conv_kept, t.mem_dense, t.mem_kept, t.predictor)
    (864.0, 648.0, 576.0, 270.0, 400.0)
    """
    if len(active_fraction_by_step) != T or len(zero_fraction_by_step) != T:
        raise ValueError(f"need one active fraction and one zero fraction per step (T={T})")
    conv_dense = float(B * T * (c_out * h) * kvol)
    conv_kept = float(B * sum(active_fraction_by_step) * (c_out * h) * kvol)
    mem_dense = float(T * B * (B * T * c_out) * h * w)
    mem_kept = float(sum(B * active_entries * h * w * (1.0 - z) for z in zero_fraction_by_step))
    predictor = 0.0
    if predictor_input is not None:
        ci, hi, wi = predictor_input
        predictor = float(2 * ci * c_out * hi * wi * predictor_calls)
    return PaperTerms(conv_dense, conv_kept, mem_dense, mem_kept, predictor)


def paper_convention_reduction(terms: list[PaperTerms]) -> float:
    """``(sum conv_dense + mem_dense) / (sum conv_kept + mem_kept + predictor)`` over layers and batches."""
    total = PaperTerms()
    for t in terms:
        total = total + t
    return total.reduction()
