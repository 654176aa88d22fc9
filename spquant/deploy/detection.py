"""Integer detectors: from the program's integer head outputs to boxes and mAP.

A folded :class:`~spquant.models.SpikingYOLO` is an ordinary :class:`~spquant.deploy.fold.Program`
whose last node is the 1x1 head convolution (per step, fixed point with ``F`` fractional bits) and
whose ``meta["detection"]`` holds what box decoding needs: ``num_classes``, ``anchors`` (A x (w, h)
in input pixels), ``stride``, ``grid`` and ``input_size``. The trained model's prediction is the
mean over T of the per-step head outputs, so

    head = sum_t out_t / (T * 2^F)      reshaped to [B, A, Gh, Gw, 5 + C]

and boxes come from :func:`spquant.detect.decode` (sigmoid / exp / softmax and NMS on these
numbers: post-processing outside the integer network, a deterministic function of the integer
outputs). The interpreter and deploy-simulation produce the same integers, hence the same boxes
and the same mAP.
"""

from __future__ import annotations

import numpy as np
import torch

from spquant.deploy.program import DeployError, Program

__all__ = [
    "detection_meta",
    "head_from_integer",
    "decode_integer",
    "evaluate_integer_detector",
    "score_detector",
]


def detection_meta(program: Program) -> dict:
    """The validated ``meta["detection"]`` of a program (DeployError when it is absent or inconsistent)."""
    meta = program.meta.get("detection") if isinstance(program.meta, dict) else None
    if not isinstance(meta, dict):
        raise DeployError("this program is not a detector (no meta['detection'])")
    try:
        C = int(meta["num_classes"])
        anchors = np.asarray(meta["anchors"], dtype=np.float64)
        stride = [int(s) for s in meta["stride"]]
        grid = [int(g) for g in meta["grid"]]
        size = [int(s) for s in meta["input_size"]]
    except (KeyError, TypeError, ValueError) as e:
        raise DeployError(f"meta['detection'] is malformed: {e}") from None
    if C < 1 or anchors.ndim != 2 or anchors.shape[1] != 2 or len(anchors) < 1:
        raise DeployError(
            f"meta['detection']: need num_classes >= 1 and anchors [A, 2], got {C} and {anchors.shape}"
        )
    if not np.all(np.isfinite(anchors)) or np.any(anchors <= 0):
        raise DeployError("meta['detection']: anchors must be positive finite sizes")
    if len(stride) != 2 or len(grid) != 2 or len(size) != 2 or min(stride + grid + size) < 1:
        raise DeployError("meta['detection']: stride, grid and input_size must be two positive integers each")
    last = program.nodes[-1]
    want = len(anchors) * (5 + C)
    if last["op"] != "conv" or program.arrays[last["weight"]].shape[0] != want:
        raise DeployError(
            f"meta['detection']: the last node must be the head conv with {want} output channels"
        )
    if list(program.input["shape"][1:]) != size:
        raise DeployError(
            f"meta['detection']: input_size {size} differs from the program input {program.input['shape']}"
        )
    return {"num_classes": C, "anchors": anchors, "stride": stride, "grid": grid, "input_size": size}


def head_from_integer(program: Program, out) -> torch.Tensor:
    """Integer head outputs ``[T, B, A * (5 + C), Gh, Gw]`` -> float head ``[B, A, Gh, Gw, 5 + C]``
    (mean over T of the per-step outputs, fixed point removed), the layout of ``SpikingYOLO.forward``."""
    meta = detection_meta(program)
    out = torch.as_tensor(np.asarray(out, dtype=np.int64))
    T, B, _, Gh, Gw = out.shape
    A, C = len(meta["anchors"]), meta["num_classes"]
    # the sum is exact in int64; one division in float64 (the same numbers on every path)
    head = out.sum(0).to(torch.float64) / (T * 2.0**program.frac_bits)
    return head.view(B, A, 5 + C, Gh, Gw).permute(0, 1, 3, 4, 2).contiguous()


def decode_integer(
    program: Program,
    out,
    conf_threshold: float = 0.05,
    nms_iou: float = 0.45,
    max_det: int = 100,
    agnostic: bool = False,
) -> list[np.ndarray]:
    """Detections ``[n, 6]`` (x1, y1, x2, y2, score, class) per image from integer head outputs."""
    from spquant.detect import decode

    meta = detection_meta(program)
    head = head_from_integer(program, out)
    dets = decode(
        head,
        torch.as_tensor(meta["anchors"], dtype=torch.float64),
        tuple(meta["stride"]),
        conf_threshold,
        nms_iou,
        max_det,
        image_size=tuple(meta["input_size"]),
        agnostic=agnostic,
    )
    return [d.numpy() for d in dets]


def evaluate_integer_detector(
    run, program: Program, batches, conf_threshold: float = 0.05, nms_iou: float = 0.45, max_det: int = 100
) -> dict:
    """VOC mAP@0.5 and COCO mAP@[.5:.95] of an integer detector.

    ``run(codes [T, B, C, H, W]) -> integer head outputs [T, B, ...]`` (the interpreter's ``run`` or
    deploy-simulation's ``integer_logits``); ``batches`` yields ``(codes, [boxes [n, 5], ...])``.
    Returns the metrics of :func:`spquant.detect.evaluate` plus ``detections`` (per image) and
    ``samples``.
    """
    from spquant.detect import evaluate

    meta = detection_meta(program)
    dets, gts = [], []
    for codes, boxes in batches:
        dets.extend(decode_integer(program, run(codes), conf_threshold, nms_iou, max_det))
        gts.extend(np.asarray(b, dtype=np.float64).reshape(-1, 5) for b in boxes)
    metrics = evaluate(dets, gts, meta["num_classes"])
    metrics["samples"] = len(gts)
    metrics["detections"] = dets
    return metrics


def score_detector(
    program: Program,
    dataset,
    batch_size: int = 64,
    path: str = "fast",
    limit: int | None = None,
    conf_threshold: float = 0.05,
    nms_iou: float = 0.45,
    max_det: int = 100,
) -> dict:
    """Run a folded detector with the integer interpreter over a detection data set
    (``dataset[i] -> (frames [T, C, H, W] event counts, boxes [n, 5])``) and score it.

    Returns mAP@0.5 (VOC), COCO mAP@[.5:.95], AP@0.5 (COCO rules), the number of samples and
    detections, and with ``path='reference'`` the executed operation counts per sample. Frames
    must be integer counts within the program's input range (what the model was trained on).
    """
    from spquant.data.detection import collate_detection
    from spquant.deploy.interpreter import Interpreter, OpCounts

    detection_meta(program)
    interp = Interpreter(program)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    ops = OpCounts()

    def batches():
        for i in range(0, n, batch_size):
            x, boxes = collate_detection([dataset[j] for j in range(i, min(n, i + batch_size))])
            codes = program.encode_input(x)
            if not np.array_equal(codes, x.numpy()):
                raise DeployError(
                    "detection frames are not integer counts within the model's input range "
                    f"0..{program.input['max']}; the integer model cannot see them exactly"
                )
            yield codes, boxes

    def run(codes):
        out = interp.run(codes, path=path)
        if path == "reference":
            for k, v in interp.last_counts.as_dict().items():
                setattr(ops, k, getattr(ops, k) + v)
        return out

    m = evaluate_integer_detector(run, program, batches(), conf_threshold, nms_iou, max_det)
    res = {k: m[k] for k in ("mAP50", "mAP50_95", "AP50_coco", "samples", "n_det")}
    if path == "reference":
        res["ops_per_sample"] = {k: v / max(n, 1) for k, v in ops.as_dict().items()}
    return res
