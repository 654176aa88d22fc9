import pytest
import torch

from spquant.detect import YOLOLoss, batched_nms, box_iou, decode, nms
from spquant.models import MODELS, QuantSpec, SpikingYOLO


def test_box_iou_hand():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[2.0, 2.0, 6.0, 6.0], [10.0, 10.0, 12.0, 12.0], [0.0, 0.0, 4.0, 2.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([4 / 28, 0.0, 0.5])


def test_nms_greedy_and_classwise():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 0, 10, 10], [0, 0, 9, 10], [30, 30, 40, 40]], dtype=torch.float32
    )
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 0, 3]
    classes = torch.tensor([0, 0, 1, 0])
    # box 2 is another class: survives
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [1, 2, 3]


def test_decode_recovers_an_encoded_box():
    anchors = torch.tensor([[8.0, 8.0], [20.0, 24.0]])
    pred = torch.full((1, 2, 4, 4, 7), -10.0)
    # box centre (22, 13) -> cell gx=2 (stride 8), gy=1, offsets .75, .625; size (30, 24) with anchor 1
    pred[0, 1, 1, 2, 0] = 10.0
    pred[0, 1, 1, 2, 1] = torch.logit(torch.tensor(0.75))
    pred[0, 1, 1, 2, 2] = torch.logit(torch.tensor(0.625))
    pred[0, 1, 1, 2, 3] = torch.log(torch.tensor(30 / 20))
    pred[0, 1, 1, 2, 4] = torch.log(torch.tensor(24 / 24))
    pred[0, 1, 1, 2, 5:] = torch.tensor([0.0, 5.0])
    (d,) = decode(pred, anchors, (8, 8), conf_threshold=0.5)
    assert d.shape == (1, 6)
    assert d[0, :4].tolist() == pytest.approx([7, 1, 37, 25], abs=1e-4)
    assert d[0, 5].item() == 1


def test_loss_targets_and_gradient_direction():
    loss = YOLOLoss([(8, 8), (20, 24)], num_classes=2, stride=(8, 8))
    target = [torch.tensor([[7.0, 1.0, 37.0, 25.0, 1.0]])]
    pred = torch.zeros(1, 2, 4, 4, 7, requires_grad=True)
    total, parts = loss(pred, target)
    total.backward()
    g = pred.grad
    assert g[0, 1, 1, 2, 0] < 0  # responsible slot: raise objectness
    assert g[0, 0, 0, 0, 0] > 0  # empty slot: lower objectness
    assert g[0, 1, 1, 2, 6] < 0 < g[0, 1, 1, 2, 5]  # class 1 up, class 0 down
    # the exact encoding has zero box/coord loss
    p = torch.zeros(1, 2, 4, 4, 7)
    p[0, 1, 1, 2, 1:5] = torch.tensor(
        [torch.logit(torch.tensor(0.75)), torch.logit(torch.tensor(0.625)), torch.log(torch.tensor(1.5)), 0.0]
    )
    assert loss(p, target)[1]["coord"] == pytest.approx(0.0, abs=1e-10)


def test_loss_handles_empty_targets():
    loss = YOLOLoss([(8, 8)], num_classes=1, stride=(8, 8))
    pred = torch.zeros(2, 1, 2, 2, 6, requires_grad=True)
    total, parts = loss(pred, [torch.zeros(0, 5), torch.zeros(0, 5)])
    total.backward()
    assert parts["obj"] == 0 and parts["noobj"] > 0


@pytest.mark.parametrize("mode", ["fp32", "quant"])
def test_yolo_modes_and_readout(mode):
    torch.manual_seed(0)
    net = SpikingYOLO(
        3,
        input_size=(32, 32),
        width=0.125,
        anchors=[(8, 8), (16, 16)],
        spec=QuantSpec(mode=mode),
        plan=(16, "M", 32, "M", 64),
    )
    assert MODELS["yolo"] is SpikingYOLO
    x = (torch.rand(3, 2, 2, 32, 32) < 0.2).float()
    net.eval()
    out = net(x)
    assert out.shape == (2, 2, 8, 8, 8)
    assert torch.allclose(out, net.per_step(x).mean(0), atol=1e-5)  # mean over T of the head
    dets = net.decode(out)
    assert len(dets) == 2 and all(d.shape[1] == 6 for d in dets)
    if mode == "quant":
        from spquant.quant import IntegerMembrane

        assert all(isinstance(l.membrane, IntegerMembrane) for l in net.lif_layers())
        assert net.head.weight_quant.__class__.__name__ != "IdentityWeight"


def test_yolo_rejects_bad_input_size():
    with pytest.raises(ValueError):
        SpikingYOLO(2, input_size=(30, 32))


def test_colliding_boxes_keep_the_later_target():
    from spquant.detect.loss import build_targets

    anchors = torch.tensor([[8.0, 8.0]])
    t = [torch.tensor([[0.0, 0.0, 8.0, 8.0, 1.0], [1.0, 1.0, 7.0, 7.0, 2.0], [16.0, 16.0, 24.0, 24.0, 0.0]])]
    tg = build_targets(t, anchors, (4, 4), (8.0, 8.0))
    assert tg["index"].tolist() == [[0, 0, 0, 0], [0, 0, 2, 2]]
    assert tg["cls"].tolist() == [2, 0]


def test_agnostic_decode_scores_by_objectness():
    anchors = torch.tensor([[8.0, 8.0]])
    pred = torch.full((1, 1, 2, 2, 8), -10.0)
    pred[0, 0, 0, 0, 0] = 2.0
    pred[0, 0, 0, 0, 5:] = torch.tensor([0.0, 0.1, 0.0])  # nearly uniform classes
    (d,) = decode(pred, anchors, (8, 8), conf_threshold=0.5, agnostic=True)
    assert d.shape == (1, 6) and d[0, 4].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert d[0, 5].item() == 1
    (d2,) = decode(pred, anchors, (8, 8), conf_threshold=0.5)  # class-wise: 0.88 * ~0.35 < 0.5
    assert d2.shape == (0, 6)


def test_class_radius_adds_the_mean_class_loss_of_the_neighbouring_cells():
    torch.manual_seed(0)
    anchors, stride = [(8, 8), (20, 24)], (8, 8)
    target = [torch.tensor([[1.0, 1.0, 9.0, 9.0, 1.0]])]  # centre (5, 5): cell (0, 0), anchor 0
    pred = torch.randn(1, 2, 4, 4, 7, requires_grad=True)
    plain = YOLOLoss(anchors, num_classes=2, stride=stride)(pred, target)[1]["cls"]
    total, parts = YOLOLoss(anchors, num_classes=2, stride=stride, class_radius=1)(pred, target)
    # the corner cell has 3 neighbours inside the grid: cells (0,0), (0,1), (1,0), (1,1) of anchor 0
    ce = [
        torch.nn.functional.cross_entropy(pred[0, 0, y, x, 5:], torch.tensor(1))
        for y, x in [(0, 0), (0, 1), (1, 0), (1, 1)]
    ]
    assert parts["cls"] == pytest.approx(plain + sum(c.item() for c in ce) / 4, rel=1e-6)
    total.backward()
    g = pred.grad
    assert g[0, 0, 1, 1, 6] < 0 < g[0, 0, 1, 1, 5]  # a neighbour learns the class too
    assert torch.all(g[0, 0, 2:, :, 5:] == 0) and torch.all(g[0, 1, :, :, 5:] == 0)  # nothing further away
