"""YOLOv2-style detection loss.

For every ground-truth box (x1, y1, x2, y2, class) in input pixels:

* its **cell** is the grid cell holding its centre; its **anchor** is the anchor with the largest
  shape IoU (w/h only, centres aligned) — that (anchor, cell) slot is *responsible* for it (if two
  boxes pick the same slot, the later one wins);
* the responsible slot learns objectness 1 (BCE on the logit), the centre offset inside the cell as
  ``sigmoid(t_x), sigmoid(t_y)`` (squared error against the offset in [0, 1)), the size in log space
  ``t_w = log(w / anchor_w)`` (squared error), weighted by ``2 - w h / (W H)`` (small boxes count
  more), and the class (cross-entropy);
* every other slot learns objectness 0 with weight ``lambda_noobj`` — except slots whose current
  predicted box already overlaps some ground truth with IoU > ``ignore_threshold`` (YOLOv2's
  ignore rule), which get no objectness loss.

The loss is summed over slots and averaged over the batch.

>>> import torch
>>> loss = YOLOLoss(anchors=[(16, 16)], num_classes=2, stride=(8, 8))
>>> pred = torch.zeros(1, 1, 4, 4, 7, requires_grad=True)
>>> total, parts = loss(pred, [torch.tensor([[4., 4., 20., 20., 1.]])])
>>> sorted(parts)
['cls', 'coord', 'noobj', 'obj']
>>> total.backward(); bool(pred.grad.abs().sum() > 0)
True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spquant.models.boxes import box_iou, cxcywh_to_xyxy, wh_iou

__all__ = ["YOLOLoss", "build_targets"]


def build_targets(targets, anchors: torch.Tensor, grid: tuple[int, int], stride: tuple[float, float]):
    """Assign ground truths to (image, anchor, gy, gx) slots.

    Returns a dict with ``index`` [n, 4] (b, a, gy, gx), ``txy`` [n, 2] offsets in [0, 1),
    ``twh`` [n, 2] log sizes, ``cls`` [n], ``wh`` [n, 2] box sizes in pixels.
    """
    Gh, Gw = grid
    sy, sx = stride
    idx, txy, twh, cls, whs = [], [], [], [], []
    for b, t in enumerate(targets):
        t = torch.as_tensor(t, dtype=torch.float32, device=anchors.device).reshape(-1, 5)
        if t.shape[0] == 0:
            continue
        w = (t[:, 2] - t[:, 0]).clamp(min=1e-3)
        h = (t[:, 3] - t[:, 1]).clamp(min=1e-3)
        cx = (t[:, 0] + t[:, 2]) / 2 / sx
        cy = (t[:, 1] + t[:, 3]) / 2 / sy
        gx = cx.floor().clamp(0, Gw - 1)
        gy = cy.floor().clamp(0, Gh - 1)
        wh = torch.stack([w, h], 1)
        a = wh_iou(wh, anchors).argmax(1)
        idx.append(torch.stack([torch.full_like(a, b), a, gy.long(), gx.long()], 1))
        txy.append(torch.stack([(cx - gx).clamp(0, 1), (cy - gy).clamp(0, 1)], 1))
        twh.append(torch.log(wh / anchors[a]))
        cls.append(t[:, 4].long())
        whs.append(wh)
    if not idx:
        z = torch.zeros(0, 2, device=anchors.device)
        return {
            "index": torch.zeros(0, 4, dtype=torch.long, device=anchors.device),
            "txy": z,
            "twh": z,
            "cls": torch.zeros(0, dtype=torch.long, device=anchors.device),
            "wh": z,
        }
    out = {
        "index": torch.cat(idx),
        "txy": torch.cat(txy),
        "twh": torch.cat(twh),
        "cls": torch.cat(cls),
        "wh": torch.cat(whs),
    }
    # one target per slot: when several boxes pick the same (image, anchor, cell), the later one wins
    i = out["index"]
    slot = ((i[:, 0] * anchors.shape[0] + i[:, 1]) * Gh + i[:, 2]) * Gw + i[:, 3]
    n = slot.numel()
    last = torch.full((int(slot.max()) + 1,), -1, dtype=torch.long, device=slot.device)
    last = last.scatter_reduce(0, slot, torch.arange(n, device=slot.device), "amax")
    keep = torch.sort(last[last >= 0]).values
    return {k: v[keep] for k, v in out.items()}


class YOLOLoss(nn.Module):
    """YOLOv2 loss on head outputs ``[B, A, Gh, Gw, 5 + C]`` (see the module docstring).

    Args:
        anchors: A (w, h) pairs in input pixels.
        num_classes: C.
        stride: (sy, sx) input pixels per grid cell.
        lambda_coord, lambda_obj, lambda_noobj, lambda_cls: term weights.
        ignore_threshold: predicted boxes overlapping a ground truth above this IoU get no noobj loss.

    ``forward(pred, targets)`` returns ``(total, parts)`` with the (detached) terms in ``parts``.
    """

    def __init__(
        self,
        anchors,
        num_classes: int,
        stride,
        lambda_coord: float = 5.0,
        lambda_obj: float = 1.0,
        lambda_noobj: float = 0.5,
        lambda_cls: float = 1.0,
        ignore_threshold: float = 0.6,
        class_radius: int = 0,
    ):
        super().__init__()
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2))
        self.num_classes = int(num_classes)
        self.stride = (float(stride[0]), float(stride[1]))
        self.lambda_coord, self.lambda_obj = lambda_coord, lambda_obj
        self.lambda_noobj, self.lambda_cls = lambda_noobj, lambda_cls
        self.ignore_threshold = ignore_threshold
        self.class_radius = int(class_radius)

    def forward(self, pred: torch.Tensor, targets) -> tuple[torch.Tensor, dict]:
        B, A, Gh, Gw, D = pred.shape
        if A != self.anchors.shape[0] or D != 5 + self.num_classes:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} does not match {A} anchors x (5 + {self.num_classes})"
            )
        sy, sx = self.stride
        tg = build_targets(targets, self.anchors, (Gh, Gw), self.stride)
        b, a, gy, gx = tg["index"].unbind(1) if tg["index"].numel() else (tg["index"][:, 0],) * 4
        obj_mask = torch.zeros(B, A, Gh, Gw, dtype=torch.bool, device=pred.device)
        obj_mask[b, a, gy, gx] = True

        # ignore rule: slots whose predicted box already fits a ground truth well
        noobj_mask = ~obj_mask
        with torch.no_grad():
            ys, xs = torch.meshgrid(
                torch.arange(Gh, dtype=pred.dtype, device=pred.device),
                torch.arange(Gw, dtype=pred.dtype, device=pred.device),
                indexing="ij",
            )
            cx = (xs + torch.sigmoid(pred[..., 1])) * sx
            cy = (ys + torch.sigmoid(pred[..., 2])) * sy
            w = self.anchors[:, 0].view(1, A, 1, 1) * torch.exp(pred[..., 3].clamp(max=10))
            h = self.anchors[:, 1].view(1, A, 1, 1) * torch.exp(pred[..., 4].clamp(max=10))
            boxes = cxcywh_to_xyxy(torch.stack([cx, cy, w, h], -1))
            for i, t in enumerate(targets):
                t = torch.as_tensor(t, dtype=torch.float32, device=pred.device).reshape(-1, 5)
                if t.shape[0]:
                    best = box_iou(boxes[i].reshape(-1, 4), t[:, :4]).max(1).values.view(A, Gh, Gw)
                    noobj_mask[i] &= best <= self.ignore_threshold

        obj_logit = pred[..., 0]
        l_noobj = F.binary_cross_entropy_with_logits(
            obj_logit[noobj_mask], torch.zeros_like(obj_logit[noobj_mask]), reduction="sum"
        )
        n = b.numel()
        if n:
            p = pred[b, a, gy, gx]  # [n, D]
            l_obj = F.binary_cross_entropy_with_logits(p[:, 0], torch.ones_like(p[:, 0]), reduction="sum")
            scale = 2.0 - tg["wh"].prod(1) / (Gh * sy * Gw * sx)
            err = ((torch.sigmoid(p[:, 1:3]) - tg["txy"]) ** 2).sum(1) + ((p[:, 3:5] - tg["twh"]) ** 2).sum(1)
            l_coord = (scale * err).sum()
            if self.num_classes == 1:
                l_cls = p.new_zeros(())
            else:
                l_cls = F.cross_entropy(p[:, 5:], tg["cls"], reduction="sum")
                if self.class_radius:
                    l_cls = l_cls + self._neighbour_cls(pred, b, a, gy, gx, tg["cls"])
        else:
            l_obj = l_coord = l_cls = pred.sum() * 0
        total = (
            self.lambda_obj * l_obj
            + self.lambda_noobj * l_noobj
            + self.lambda_coord * l_coord
            + self.lambda_cls * l_cls
        ) / B
        parts = {
            k: float(v.detach()) / B
            for k, v in {"obj": l_obj, "noobj": l_noobj, "coord": l_coord, "cls": l_cls}.items()
        }
        return total, parts

    def _neighbour_cls(self, pred, b, a, gy, gx, cls) -> torch.Tensor:
        """Class cross-entropy at the responsible anchor of every cell within ``class_radius``
        cells (Chebyshev distance) of the centre cell, averaged over those cells per box."""
        _, _, Gh, Gw, _ = pred.shape
        r = self.class_radius
        d = torch.arange(-r, r + 1, device=pred.device)
        dy, dx = (v.reshape(-1) for v in torch.meshgrid(d, d, indexing="ij"))
        ny, nx = gy[:, None] + dy[None], gx[:, None] + dx[None]  # [n, (2r+1)^2]
        ok = (ny >= 0) & (ny < Gh) & (nx >= 0) & (nx < Gw)
        weight = ok.float() / ok.sum(1, keepdim=True)
        bb, aa = b[:, None].expand_as(ny), a[:, None].expand_as(ny)
        logits = pred[bb[ok], aa[ok], ny[ok], nx[ok]][:, 5:]
        ce = F.cross_entropy(logits, cls[:, None].expand_as(ny)[ok], reduction="none")
        return (ce * weight[ok]).sum()
