"""VOC / COCO mAP against hand-computed cases and (when installed) pycocotools."""

import numpy as np
import pytest

from spquant.detect.metrics import coco_map, evaluate, voc_ap, voc_class_ap

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]


def det(box, score, cls):
    return [*box, score, cls]


def gt(box, cls):
    return [*box, cls]


def test_perfect_detections_give_ap_one():
    gts = [np.array([gt(A, 0), gt(B, 1)]), np.array([gt(B, 0)])]
    dets = [np.array([det(A, 0.9, 0), det(B, 0.8, 1)]), np.array([det(B, 0.7, 0)])]
    r = evaluate(dets, gts, num_classes=2)
    assert r["mAP50"] == 1.0
    assert r["mAP50_95"] == pytest.approx(1.0)
    assert r["AP_per_class"] == [1.0, 1.0]


def test_missed_box_halves_recall():
    # two objects of class 0, one found: recall 0.5 at precision 1 -> AP = 0.5
    gts = [np.array([gt(A, 0), gt(B, 0)])]
    dets = [np.array([det(A, 0.9, 0)])]
    assert evaluate(dets, gts, 1)["mAP50"] == pytest.approx(0.5)
    # COCO: precision 1 for the recall points 0..0.50 (51 of 101), 0 after
    assert coco_map(dets, gts, 1) == pytest.approx(51 / 101)


def test_duplicate_is_a_false_positive():
    gts = [np.array([gt(A, 0)])]
    # the higher-scored duplicate comes first: TP, then FP -> AP stays 1 (recall reached at precision 1)
    assert evaluate([np.array([det(A, 0.9, 0), det(A, 0.8, 0)])], gts, 1)["mAP50"] == 1.0
    # a duplicate scored above the real hit in another image costs precision
    gts2 = [np.array([gt(A, 0)]), np.array([gt(B, 0)])]
    dets2 = [np.array([det(A, 0.9, 0), det(A, 0.95, 0)]), np.array([det(B, 0.5, 0)])]
    # order: 0.95 TP (img0), 0.9 FP (dup), 0.5 TP -> rec [.5,.5,1], prec [1,.5,.667]
    ap, rec, prec, n = voc_class_ap(
        [np.asarray(d, float) for d in dets2], [np.asarray(g, float) for g in gts2], 0
    )
    assert rec.tolist() == [0.5, 0.5, 1.0]
    assert prec == pytest.approx([1.0, 0.5, 2 / 3])
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_wrong_class_counts_as_miss_and_false_positive():
    gts = [np.array([gt(A, 0)])]
    dets = [np.array([det(A, 0.9, 1)])]
    r = evaluate(dets, gts, num_classes=2)
    assert r["AP_per_class"][0] == 0.0
    assert np.isnan(r["AP_per_class"][1])  # class 1 has no ground truth: left out of the mean
    assert r["mAP50"] == 0.0


def test_iou_threshold_is_strict_for_voc():
    gts = [np.array([gt([0, 0, 10, 10], 0)])]
    # IoU exactly 0.5: box [0,0,10,5] inside; VOC devkit needs > 0.5
    assert evaluate([np.array([det([0, 0, 10, 5], 0.9, 0)])], gts, 1)["mAP50"] == 0.0
    assert evaluate([np.array([det([0, 0, 10, 6], 0.9, 0)])], gts, 1)["mAP50"] == 1.0


def test_hand_computed_pr_curve():
    # 5 ground truths in 3 images; 6 detections scored 0.9..0.4 with outcomes TP FP TP TP FP TP... by hand:
    gts = [np.array([gt(A, 0), gt(B, 0)]), np.array([gt(A, 0)]), np.array([gt(A, 0), gt(B, 0)])]
    far = [50, 50, 60, 60]
    dets = [
        np.array([det(A, 0.9, 0), det(far, 0.6, 0)]),  # TP (0.9), FP (0.6)
        np.array([det(far, 0.8, 0), det(A, 0.7, 0)]),  # FP (0.8), TP (0.7)
        np.array([det(B, 0.5, 0), det(far, 0.4, 0)]),  # TP (0.5), FP (0.4)
    ]
    # sorted: .9 TP, .8 FP, .7 TP, .6 FP, .5 TP, .4 FP
    # recall   .2 .2 .4 .4 .6 .6 ; precision 1 .5 .667 .5 .6 .5
    # envelope at recall changes: r .2 -> p 1; r .4 -> max(.667,.5,.6,.5) = .667; r .6 -> .6
    expected = 0.2 * 1 + 0.2 * (2 / 3) + 0.2 * 0.6
    assert evaluate(dets, gts, 1)["mAP50"] == pytest.approx(expected)
    assert voc_ap(
        np.array([0.2, 0.2, 0.4, 0.4, 0.6, 0.6]), np.array([1, 0.5, 2 / 3, 0.5, 0.6, 0.5])
    ) == pytest.approx(expected)


def test_no_detections_and_empty_images():
    gts = [np.zeros((0, 5)), np.array([gt(A, 0)])]
    r = evaluate([np.zeros((0, 6)), np.zeros((0, 6))], gts, 1)
    assert r["mAP50"] == 0.0 and r["mAP50_95"] == 0.0


def _random_case(rng, n_img=12, n_cls=3):
    gts, dets = [], []
    for _ in range(n_img):
        g = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(5, 30, 2)
            g.append([x, y, x + w, y + h, rng.integers(0, n_cls)])
        d = []
        for box in g:  # jittered hits, some class errors
            if rng.random() < 0.8:
                j = rng.normal(0, 3, 4)
                c = box[4] if rng.random() < 0.85 else rng.integers(0, n_cls)
                d.append([box[0] + j[0], box[1] + j[1], box[2] + j[2], box[3] + j[3], rng.random(), c])
        for _ in range(rng.integers(0, 3)):  # clutter
            x, y = rng.uniform(0, 80, 2)
            d.append([x, y, x + 15, y + 15, rng.random() * 0.5, rng.integers(0, n_cls)])
        gts.append(np.array(g, float).reshape(-1, 5))
        dets.append(np.array(d, float).reshape(-1, 6))
    return dets, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_matches_pycocotools(seed):
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_cls = 3
    dets, gts = _random_case(np.random.default_rng(seed), n_cls=n_cls)
    images, anns, results = [], [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        images.append({"id": i, "width": 120, "height": 120})
        for b in g:
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(b[4]),
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b in d:
            results.append(
                {
                    "image_id": i,
                    "category_id": int(b[5]),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": float(b[4]),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c} for c in range(n_cls)],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # [T, R, K]
    ref_5095 = prec[prec > -1].mean()
    p50 = prec[0]
    ref_50 = p50[p50 > -1].mean()
    assert coco_map(dets, gts, n_cls) == pytest.approx(ref_5095, abs=1e-12)
    assert coco_map(dets, gts, n_cls, iou_thresholds=[0.5]) == pytest.approx(ref_50, abs=1e-12)
