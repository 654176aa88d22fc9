"""What differs between the tasks the one training loop runs: the loss, the score shown while
training, the test metrics and where the targets go.

* ``classify``: TET loss of the per-step logits (:func:`spquant.train.loss.tet_loss`); test
  accuracy = argmax of the mean logits over T.
* ``detect``: YOLOv2 loss of the head output (:class:`spquant.detect.YOLOLoss`); test VOC mAP@0.5
  and COCO mAP@[.5:.95] of the decoded, NMS-filtered boxes (:mod:`spquant.detect.metrics`).

``task_for(config)`` returns the task of a recipe; the loop calls only the methods below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spquant.train.loss import resolve_phi, tet_loss

__all__ = ["ClassifyTask", "DetectTask", "task_for"]


def _to(target, device):
    if torch.is_tensor(target):
        return target.to(device, non_blocking=True)
    return [t.to(device, non_blocking=True) for t in target]


class ClassifyTask:
    name = "classify"
    headline = "test_accuracy"  # the run metric the report compares

    def __init__(self, config):
        self.config = config

    def to_device(self, target, device):
        return _to(target, device)

    def loss(self, model: nn.Module, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        t = self.config.train
        return tet_loss(out, target, t.lam, resolve_phi(t.phi, model)), {}

    def train_score(self, out: torch.Tensor, target: torch.Tensor) -> float | None:
        """Batch accuracy of the mean logits (for the progress bar and metrics.jsonl)."""
        with torch.no_grad():
            return float((out.detach().mean(0).argmax(-1) == target).float().mean())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, batch_size: int, device, dist=None) -> dict:
        """Accuracy (argmax of the mean logits over T) and mean CE loss of the mean logits."""
        T = self.config.model.T
        idx_all = torch.arange(len(data))
        if dist is not None and dist.world > 1:
            idx_all = idx_all[dist.rank :: dist.world]
        correct = loss_sum = 0.0
        for s in range(0, len(idx_all), batch_size):
            x, y = data.batch(idx_all[s : s + batch_size], T)
            x, y = x.to(device), y.to(device)
            out = model(x).mean(0)
            correct += float((out.argmax(-1) == y).sum())
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
        count = float(len(idx_all))
        if dist is not None:
            correct, loss_sum, count = dist.all_sum([correct, loss_sum, count])
        return {
            "accuracy": correct / max(count, 1.0),
            "loss": loss_sum / max(count, 1.0),
            "samples": int(count),
        }

    def run_metrics(self, ev: dict) -> dict:
        """The evaluation as the run folder stores it (run.json ``metrics``)."""
        return {"test_accuracy": ev["accuracy"], "test_loss": ev["loss"], "test_samples": ev["samples"]}

    def summary(self, ev: dict) -> str:
        return f"test acc {ev['accuracy']:.4f}"


class DetectTask:
    name = "detect"
    headline = "mAP50"

    def __init__(self, config):
        self.config = config
        self._loss = None

    def to_device(self, target, device):
        return _to(target, device)

    def loss(self, model: nn.Module, out: torch.Tensor, target) -> tuple[torch.Tensor, dict]:
        if self._loss is None:
            from spquant.detect.loss import YOLOLoss

            self._loss = YOLOLoss(
                model.anchors, model.num_classes, model.stride, **self.config.detect.loss_weights()
            )
        self._loss.to(out.device)
        return self._loss(out, target)

    def train_score(self, out, target) -> float | None:
        return None  # mAP needs the whole test set

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, batch_size: int, device, dist=None) -> dict:
        """VOC mAP@0.5, COCO mAP@[.5:.95] and AP@0.5, and the class-agnostic (localisation only)
        mAPs, over the whole test set on every rank (mAP does not split over ranks)."""
        import numpy as np

        from spquant.detect.metrics import evaluate
        from spquant.models.boxes import decode

        e, T = self.config.detect, self.config.model.T
        anchors = model.anchors.detach().cpu()
        dets, agn, gts = [], [], []
        for s in range(0, len(data), batch_size):
            x, boxes = data.batch(torch.arange(s, min(s + batch_size, len(data))), T)
            out = model(x.to(device)).float().cpu()
            kw = dict(image_size=model.input_size)
            dets += [
                d.numpy()
                for d in decode(out, anchors, model.stride, e.conf_threshold, e.nms_iou, e.max_det, **kw)
            ]
            for d in decode(
                out, anchors, model.stride, e.conf_threshold, e.nms_iou, e.max_det, agnostic=True, **kw
            ):
                d = d.numpy().copy()
                d[:, 5] = 0
                agn.append(d)
            gts += [b.cpu().numpy() for b in boxes]
        m = evaluate(dets, gts, model.num_classes)
        one = [np.concatenate([g[:, :4], np.zeros((len(g), 1))], 1) for g in gts]
        a = evaluate(agn, one, 1)
        return {
            "mAP50": float(m["mAP50"]),
            "mAP50_95": float(m["mAP50_95"]),
            "AP50_coco": float(m["AP50_coco"]),
            "mAP50_agnostic": float(a["mAP50"]),
            "mAP50_95_agnostic": float(a["mAP50_95"]),
            "AP_per_class": [None if math.isnan(v) else float(v) for v in m["AP_per_class"]],
            "n_det": int(m["n_det"]),
            "samples": len(gts),
        }

    def run_metrics(self, ev: dict) -> dict:
        return {**{k: v for k, v in ev.items() if k != "samples"}, "test_samples": ev["samples"]}

    def summary(self, ev: dict) -> str:
        return f"test mAP@0.5 {ev['mAP50']:.4f} mAP@[.5:.95] {ev['mAP50_95']:.4f}"


def task_for(config) -> ClassifyTask | DetectTask:
    """The task object of ``config.task``."""
    return {"classify": ClassifyTask, "detect": DetectTask}[config.task](config)
