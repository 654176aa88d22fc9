"""Integer SpikingYOLO: export -> .spq -> interpreter, bit-exact against deploy-simulation at every
node and every sample, for each head option; mAP from the interpreter equals mAP from deploy-sim.
Tiny detectors trained here for a few steps on tiny moving-digits event frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.data.detection import MovingDigits, collate_detection
from spquant.deploy import DeployError, DeploySim, Interpreter, fold_model
from spquant.deploy.detection import (
    decode_integer,
    detection_meta,
    evaluate_integer_detector,
    head_from_integer,
    score_detector,
)
from spquant.deploy.targets.spq import ModelFileError, load, save
from spquant.detect import YOLOLoss, evaluate
from spquant.models import QuantSpec, SpikingYOLO

T = 3

# head options: anchors (number, sizes), classes (one / many), head bits, head kernel, pooling depth, and the
# quantization of the blocks feeding the head (threshold per channel, 5-level membrane, pruning)
HEADS = {
    "quant_2anchors_10classes": dict(
        mode="quant", anchors=[[6.0, 9.0], [10.0, 10.0]], classes=10, plan=(6, "M", 8, "M", 8)
    ),
    "quant_1anchor_1class_head4bit": dict(
        mode="quant", anchors=[[8.0, 8.0]], classes=1, plan=(6, "M", 8, "M", 8), spec=dict(last_bits=4)
    ),
    "quant_3anchors_3pools_channel_vth": dict(
        mode="quant",
        anchors=[[4.0, 6.0], [8.0, 10.0], [12.0, 12.0]],
        classes=3,
        plan=(4, "M", 6, "M", 8, "M", 8),
        spec=dict(learn_threshold="channel", membrane_lb=-3, membrane_ub=1),
    ),
    "quant_3x3_head": dict(
        mode="quant", anchors=[[6.0, 9.0], [10.0, 10.0]], classes=10, plan=(6, "M", 8, "M", 8), head_kernel=3
    ),
    "spquant_2anchors_10classes": dict(
        mode="spquant", anchors=[[6.0, 9.0], [10.0, 10.0]], classes=10, plan=(6, "M", 8, "M", 8)
    ),
}


@pytest.fixture(scope="module")
def data():
    ds = MovingDigits(
        num_samples=24, canvas=32, digits=(1, 2), T=T, steps=6, speed=(2.0, 6.0), cache_dir=None, seed=3
    )
    return collate_detection([ds[i] for i in range(len(ds))])


def _tiny_detector(opt: dict, x, boxes) -> SpikingYOLO:
    torch.manual_seed(0)
    spec = QuantSpec(mode=opt["mode"], **opt.get("spec", {}))
    model = SpikingYOLO(
        opt["classes"],
        in_channels=2,
        input_size=(32, 32),
        anchors=opt["anchors"],
        spec=spec,
        plan=opt["plan"],
        head_kernel=opt.get("head_kernel", 1),
    )
    if opt["classes"] < 10:
        boxes = [b.clone() for b in boxes]
        for b in boxes:
            b[:, 4] = b[:, 4] % opt["classes"]
    loss_fn = YOLOLoss(model.anchors, model.num_classes, model.stride)
    adam = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(6):
        sl = slice((step * 8) % 24, (step * 8) % 24 + 8)
        loss, _ = loss_fn(model(x[:, sl]), boxes[sl])
        adam.zero_grad()
        loss.backward()
        adam.step()
    return model.eval()


@pytest.mark.parametrize("head", list(HEADS))
def test_detector_parity(head, data, tmp_path):
    x, boxes = data
    model = _tiny_detector(HEADS[head], x, boxes)
    program = fold_model(model, (2, 32, 32), input_bits=8, input_scale=1.0)
    assert any(n["op"] == "maxpool" for n in program.nodes) and program.nodes[-1]["name"].startswith("head")
    meta = detection_meta(program)
    assert (
        np.allclose(meta["anchors"], HEADS[head]["anchors"]) and meta["num_classes"] == HEADS[head]["classes"]
    )
    save(program, tmp_path / "det.spq")
    loaded = load(tmp_path / "det.spq")
    assert detection_meta(loaded)["stride"] == list(model.stride)
    codes = program.encode_input(x)
    assert np.array_equal(codes, x.numpy().astype(np.int64)), "event counts must encode to themselves"
    sim = DeploySim(program)
    interp = Interpreter(loaded)
    env_sim = {k: v.numpy().astype(np.int64) for k, v in sim.run_codes(torch.from_numpy(codes)).items()}
    fast = interp.run_all(codes, path="fast")
    ref = interp.run_all(codes[:, :6], path="reference")
    assert set(env_sim) == set(fast) == set(ref)
    for name in env_sim:  # every node, every sample
        assert np.array_equal(env_sim[name], fast[name]), f"fast path differs from deploy-sim at {name}"
        assert np.array_equal(env_sim[name][:, :6], ref[name]), f"reference differs from deploy-sim at {name}"
    spikes = sum(int(env_sim[n["output"]].sum()) for n in program.nodes if n["op"] in ("lif", "lif_pruned"))
    assert spikes > 0, "a parity check on a silent network proves little"
    # the integer head is the fake-quantized model's head up to fixed-point rounding and rare spike flips
    with torch.no_grad():
        fq = model(x)
    head_int = head_from_integer(program, env_sim[program.output])
    assert head_int.shape == fq.shape
    close = (head_int.float() - fq).abs() <= 0.05 + 0.05 * fq.abs()
    assert close.float().mean() > 0.9, float(close.float().mean())
    # decoding the interpreter's integers == decoding deploy-sim's
    d_int = decode_integer(loaded, interp.run(codes), conf_threshold=0.0)
    d_sim = decode_integer(program, sim.integer_logits(x), conf_threshold=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(d_int, d_sim)) and sum(len(d) for d in d_int) > 0


def test_interpreter_map_equals_deploy_sim_map(data):
    x, boxes = data
    model = _tiny_detector(HEADS["quant_2anchors_10classes"], x, boxes)
    program = fold_model(model, (2, 32, 32), input_bits=8, input_scale=1.0)
    sim, interp = DeploySim(program), Interpreter(program)
    codes = program.encode_input(x)
    batches = [(codes[:, i : i + 8], boxes[i : i + 8]) for i in range(0, 24, 8)]
    m_int = evaluate_integer_detector(lambda c: interp.run(c), program, batches, conf_threshold=0.01)
    m_ref = evaluate_integer_detector(
        lambda c: interp.run(c, path="reference"), program, batches, conf_threshold=0.01
    )
    m_sim = evaluate_integer_detector(
        lambda c: sim.run_codes(torch.from_numpy(c))[program.output].numpy().astype(np.int64),
        program,
        batches,
        conf_threshold=0.01,
    )
    assert m_int["samples"] == 24 and m_int["n_det"] > 0
    for key in ("mAP50", "mAP50_95", "AP50_coco"):
        assert m_int[key] == m_sim[key] == m_ref[key], key
    # and the metric is the ordinary one of those detections
    again = evaluate(m_int["detections"], [b.numpy() for b in boxes], 10)
    assert again["mAP50"] == m_int["mAP50"]
    # what 'spquant run' calls on a detection data set: the same numbers, plus executed op counts
    samples = [(x[:, i], boxes[i]) for i in range(24)]
    scored = score_detector(program, samples, batch_size=10, path="reference", conf_threshold=0.01)
    assert (
        scored["mAP50"] == m_int["mAP50"]
        and scored["mAP50_95"] == m_int["mAP50_95"]
        and scored["samples"] == 24
    )
    assert 0 < scored["ops_per_sample"]["sops"] < scored["ops_per_sample"]["dense_macs"]
    with pytest.raises(DeployError, match="integer counts"):
        score_detector(program, [(x[:, 0] + 0.5, boxes[0])])


def test_fp32_detector_is_refused_and_bad_meta_is_caught(data, tmp_path):
    x, boxes = data
    fp32 = SpikingYOLO(
        10, in_channels=2, input_size=(32, 32), plan=(4, "M", 4), spec=QuantSpec(mode="fp32")
    ).eval()
    with pytest.raises(DeployError, match="no integer"):
        fold_model(fp32, (2, 32, 32), input_bits=8, input_scale=1.0)
    model = _tiny_detector(HEADS["quant_2anchors_10classes"], x, boxes)
    program = fold_model(model, (2, 32, 32), input_bits=8, input_scale=1.0)
    program.meta["detection"]["anchors"] = [[-1.0, 2.0], [3.0, 3.0]]
    with pytest.raises(DeployError, match="anchors"):
        detection_meta(program)
    program.meta["detection"]["anchors"] = [[1.0, 2.0]]  # one anchor, but the head predicts two
    with pytest.raises(DeployError, match="head conv"):
        detection_meta(program)
    save(program, tmp_path / "bad.spq")
    with pytest.raises((DeployError, ModelFileError)):
        detection_meta(load(tmp_path / "bad.spq"))
