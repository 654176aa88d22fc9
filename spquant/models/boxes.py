"""Box utilities for detection: IoU, greedy class-wise NMS and YOLOv2 decoding (no torchvision).

Boxes are ``[x1, y1, x2, y2]`` in input pixels (continuous corner coordinates: a box covering pixel
columns 3..5 is ``x1 = 3, x2 = 6``).

>>> import torch
>>> a = torch.tensor([[0., 0., 2., 2.]]); b = torch.tensor([[1., 1., 3., 3.], [0., 0., 2., 2.]])
>>> box_iou(a, b).tolist()
[[0.1428571492433548, 1.0]]
"""

from __future__ import annotations

import torch

__all__ = ["box_area", "box_iou", "wh_iou", "nms", "batched_nms", "decode", "cxcywh_to_xyxy"]


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes ``a`` [N, 4] and ``b`` [M, 4] -> [N, M] (0 where the union is empty)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given only by width/height, as if they shared a centre: [N, 2] x [M, 2] -> [N, M]."""
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(wh1[:, None, 1], wh2[None, :, 1])
    union = wh1[:, None].prod(-1) + wh2[None, :].prod(-1) - inter
    return inter / union.clamp(min=1e-12)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score.

    A box is suppressed when its IoU with an already kept, higher-scoring box is > ``iou_threshold``.
    Ties in score keep the lower index first (stable sort).

    >>> import torch
    >>> b = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    [0, 2]
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-wise NMS: boxes of different classes never suppress each other. Indices by decreasing score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    keep = []
    for c in torch.unique(classes):
        idx = torch.nonzero(classes == c).flatten()
        keep.append(idx[nms(boxes[idx], scores[idx], iou_threshold)])
    keep = torch.cat(keep)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def decode(
    pred: torch.Tensor,
    anchors: torch.Tensor,
    stride: tuple[float, float],
    conf_threshold: float = 0.05,
    nms_iou: float = 0.45,
    max_det: int = 100,
    image_size: tuple[int, int] | None = None,
    agnostic: bool = False,
) -> list[torch.Tensor]:
    """Turn YOLO head outputs into detections, one tensor ``[n, 6]`` = (x1, y1, x2, y2, score, class) per image.

    ``pred``: [B, A, Gh, Gw, 5 + C] raw outputs (objectness logit, tx, ty, tw, th, class logits);
    ``anchors``: [A, 2] (w, h) in input pixels; ``stride``: (sy, sx) pixels per cell.
    Box centre = (cell + sigmoid(t_xy)) * stride, size = anchor * exp(t_wh); score =
    sigmoid(objectness) * softmax(class)[c]. Every (anchor, class) pair above ``conf_threshold`` is a
    candidate; class-wise NMS at ``nms_iou``; at most ``max_det`` per image. Boxes are clipped to
    ``image_size`` (H, W) when given. ``agnostic=True``: one candidate per (anchor, cell) scored by
    sigmoid(objectness) alone, labelled with its most likely class, and NMS across classes (for
    localisation-only metrics).
    """
    B, A, Gh, Gw, D = pred.shape
    C = D - 5
    sy, sx = float(stride[0]), float(stride[1])
    gy, gx = torch.meshgrid(
        torch.arange(Gh, dtype=pred.dtype), torch.arange(Gw, dtype=pred.dtype), indexing="ij"
    )
    cx = (gx + torch.sigmoid(pred[..., 1])) * sx
    cy = (gy + torch.sigmoid(pred[..., 2])) * sy
    aw = anchors[:, 0].to(pred.dtype).view(1, A, 1, 1)
    ah = anchors[:, 1].to(pred.dtype).view(1, A, 1, 1)
    w = aw * torch.exp(pred[..., 3].clamp(max=10))
    h = ah * torch.exp(pred[..., 4].clamp(max=10))
    boxes = cxcywh_to_xyxy(torch.stack([cx, cy, w, h], -1))
    if image_size is not None:
        H, W = image_size
        boxes = torch.stack(
            [
                boxes[..., 0].clamp(0, W),
                boxes[..., 1].clamp(0, H),
                boxes[..., 2].clamp(0, W),
                boxes[..., 3].clamp(0, H),
            ],
            -1,
        )
    obj = torch.sigmoid(pred[..., 0])
    cls = torch.softmax(pred[..., 5:], -1) if C > 1 else torch.ones_like(pred[..., 5:])
    scores = obj[..., None] * cls  # [B, A, Gh, Gw, C]
    out = []
    for b in range(B):
        bx = boxes[b].reshape(-1, 4)
        if agnostic:
            sb = obj[b].reshape(-1)
            i = torch.nonzero(sb > conf_threshold).flatten()
            sb, bb, c = sb[i], bx[i], cls[b].reshape(-1, C)[i].argmax(-1)
            keep = nms(bb, sb, nms_iou)[:max_det]
            out.append(torch.cat([bb[keep], sb[keep, None], c[keep, None].to(bb.dtype)], 1).detach())
            continue
        s = scores[b].reshape(-1, C)
        i, c = torch.nonzero(s > conf_threshold, as_tuple=True)
        sb, bb = s[i, c], bx[i]
        keep = batched_nms(bb, sb, c, nms_iou)[:max_det]
        out.append(torch.cat([bb[keep], sb[keep, None], c[keep, None].to(bb.dtype)], 1).detach())
    return out
