"""Object detection with spiking YOLO: loss, decoding + NMS, VOC / COCO mAP, training entry.

The model is :class:`spquant.models.SpikingYOLO`; data sets live in :mod:`spquant.data.detection`.
"""

from spquant.detect.loss import YOLOLoss, build_targets
from spquant.detect.metrics import coco_map, evaluate, voc_ap, voc_class_ap
from spquant.models.boxes import batched_nms, box_iou, decode, nms, wh_iou

__all__ = [
    "YOLOLoss",
    "batched_nms",
    "box_iou",
    "build_targets",
    "coco_map",
    "decode",
    "evaluate",
    "nms",
    "voc_ap",
    "voc_class_ap",
    "wh_iou",
]
