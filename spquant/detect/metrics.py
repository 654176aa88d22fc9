"""Detection metrics: PASCAL-VOC mAP@0.5 (every-point interpolation) and COCO-style mAP@[0.5:0.95].

Inputs, one entry per image:

* detections: array-like ``[n, 6]`` = (x1, y1, x2, y2, score, class)
* ground truths: array-like ``[m, 5]`` = (x1, y1, x2, y2, class)

**VOC** (``voc_ap``/``evaluate``'s ``mAP50``) follows the VOC2010+ devkit (``voc_eval.py``): per
class, all detections are sorted by decreasing score (stable); each one takes the ground truth box
of its class in its image with the largest IoU; it is a true positive if that IoU is ``> 0.5`` and
the box was not already taken (a second detection of the same object is a false positive).
AP is the area under the precision envelope at every recall change (every-point interpolation).
mAP is the mean over the classes that have at least one ground-truth box.

**COCO** (``mAP50_95``) follows ``pycocotools.COCOeval`` (area range "all", ``maxDets=100`` per image
and class): per image and class, detections by decreasing score each take the best-IoU *unmatched*
ground truth with IoU >= t; precision is sampled at the 101 recall points 0, 0.01, ..., 1 of the
envelope; the result is the mean over the 10 thresholds 0.5:0.05:0.95 and the classes with ground
truth. ``tests/detect`` checks both against hand-computed cases and (when installed) pycocotools.

>>> import numpy as np
>>> gt = [np.array([[0, 0, 10, 10, 0]])]
>>> r = evaluate([np.array([[0, 0, 10, 10, 0.9, 0]])], gt, num_classes=1)
>>> r["mAP50"], round(r["mAP50_95"], 6)
(1.0, 1.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["iou_matrix", "voc_ap", "voc_class_ap", "coco_map", "evaluate", "COCO_IOUS"]

COCO_IOUS = np.linspace(0.5, 0.95, 10)
COCO_RECALLS = np.linspace(0.0, 1.0, 101)


def _arr(a, cols: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, cols))
    if a.ndim != 2 or a.shape[1] < cols:
        raise ValueError(f"expected an [n, {cols}] array, got shape {a.shape}")
    return a


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes [N, >=4] x [M, >=4] -> [N, M]."""
    a, b = np.asarray(a, np.float64)[:, :4], np.asarray(b, np.float64)[:, :4]
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Every-point interpolated AP (VOC2010+): area under the monotone precision envelope.

    >>> voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.667]))
    0.8335
    """
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_class_ap(detections, ground_truths, cls: int, iou_threshold: float = 0.5):
    """(AP, recall, precision, n_gt) of one class, VOC devkit matching. AP is nan without ground truth."""
    gts = [g[g[:, 4] == cls, :4] for g in ground_truths]
    n_gt = sum(len(g) for g in gts)
    img, score, boxes = [], [], []
    for i, d in enumerate(detections):
        d = d[d[:, 5] == cls]
        img.extend([i] * len(d))
        score.extend(d[:, 4].tolist())
        boxes.extend(d[:, :4].tolist())
    if n_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0), 0
    order = np.argsort(-np.asarray(score), kind="stable")
    taken = [np.zeros(len(g), bool) for g in gts]
    tp = np.zeros(len(order))
    for k, j in enumerate(order):
        g = gts[img[j]]
        if len(g) == 0:
            continue
        ious = iou_matrix(np.asarray([boxes[j]]), g)[0]
        best = int(np.argmax(ious))
        if ious[best] > iou_threshold and not taken[img[j]][best]:
            tp[k] = 1
            taken[img[j]][best] = True
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec), rec, prec, n_gt


def _coco_class_precision(detections, gts, cls, iou_thresholds, max_dets):
    """[len(iou_thresholds), 101] interpolated precision of one class, or None without ground truth."""
    scores, matched = [], []
    n_gt = 0
    for d, g in zip(detections, gts):
        g = g[g[:, 4] == cls]
        d = d[d[:, 5] == cls]
        d = d[np.argsort(-d[:, 4], kind="mergesort")][:max_dets]
        n_gt += len(g)
        m = np.zeros((len(iou_thresholds), len(d)), bool)
        if len(g) and len(d):
            ious = iou_matrix(d, g)
            for ti, t in enumerate(iou_thresholds):
                gtm = np.zeros(len(g), bool)
                for di in range(len(d)):
                    best, iou = -1, min(t, 1 - 1e-10)
                    for gi in range(len(g)):
                        if gtm[gi] or ious[di, gi] < iou:
                            continue
                        iou, best = ious[di, gi], gi
                    if best >= 0:
                        gtm[best] = True
                        m[ti, di] = True
        scores.append(d[:, 4])
        matched.append(m)
    if n_gt == 0:
        return None
    scores = np.concatenate(scores)
    matched = np.concatenate(matched, axis=1)
    order = np.argsort(-scores, kind="mergesort")
    out = np.zeros((len(iou_thresholds), len(COCO_RECALLS)))
    for ti in range(len(iou_thresholds)):
        tp = np.cumsum(matched[ti, order]).astype(np.float64)
        fp = np.cumsum(~matched[ti, order]).astype(np.float64)
        rc = tp / n_gt
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        inds = np.searchsorted(rc, COCO_RECALLS, side="left")
        q = np.zeros(len(COCO_RECALLS))
        for ri, pi in enumerate(inds):
            if pi < len(pr):
                q[ri] = pr[pi]
        out[ti] = q
    return out


def coco_map(
    detections, ground_truths, num_classes: int, iou_thresholds=COCO_IOUS, max_dets: int = 100
) -> float:
    """COCO-style mAP averaged over ``iou_thresholds`` (default 0.5:0.05:0.95), 101-point recall."""
    dets = [_arr(d, 6) for d in detections]
    gts = [_arr(g, 5) for g in ground_truths]
    per = [
        _coco_class_precision(dets, gts, c, np.asarray(iou_thresholds), max_dets) for c in range(num_classes)
    ]
    per = [p for p in per if p is not None]
    return float(np.mean(per)) if per else float("nan")


def evaluate(detections, ground_truths, num_classes: int, iou_threshold: float = 0.5) -> dict:
    """All detection metrics of a data set.

    Returns ``{'mAP50': VOC mAP@iou_threshold, 'mAP50_95': COCO mAP@[.5:.95], 'AP50_coco': COCO AP@0.5,
    'AP_per_class': [VOC AP or nan], 'n_gt': [...], 'n_det': int}``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truths)} images")
    dets = [_arr(d, 6) for d in detections]
    gts = [_arr(g, 5) for g in ground_truths]
    aps, ngts = [], []
    for c in range(num_classes):
        ap, _, _, n = voc_class_ap(dets, gts, c, iou_threshold)
        aps.append(ap)
        ngts.append(n)
    valid = [a for a in aps if not np.isnan(a)]
    return {
        "mAP50": float(np.mean(valid)) if valid else float("nan"),
        "mAP50_95": coco_map(dets, gts, num_classes),
        "AP50_coco": coco_map(dets, gts, num_classes, iou_thresholds=[0.5]),
        "AP_per_class": aps,
        "n_gt": ngts,
        "n_det": int(sum(len(d) for d in dets)),
    }
