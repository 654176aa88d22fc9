"""Fold a trained (fake-quantized) spquant model into an integer :class:`~spquant.deploy.program.Program`
(docs/method.md#integer-deployment): BatchNorm and weight scales become per-channel fixed-point
multipliers ``M`` and biases ``B`` with a per-layer shift, the threshold an integer ``V``, the leak a
shift, the gate and the prior their integer rules. The node semantics are in
:mod:`spquant.deploy.program`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from spquant.deploy.program import DeployError, Program, analyze

__all__ = ["fold_model"]

M_BITS = 15  # the per-layer multiplier is scaled so that max|M| lies in [2^15, 2^16) ...
F32_M_BITS = 10  # ... or, with at least 2^10, so that acc*M + B + R < F32_BUDGET (float32-exact)
F32_BUDGET = 2**23
GATE_EXP_BITS = 16  # fraction bits of the integer softmax numerators exp(-beta d)
GATE_A_BITS = 16  # fraction bits of the gate matrix A = kappa W + (b - logit(binarize_at))


def _rhu(x: np.ndarray | float) -> np.ndarray:
    """Round half up in float64 (export time only)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _square(v) -> int | None:
    """The side of a square pooling window or stride (an int or an equal pair), else None."""
    if isinstance(v, int):
        return v
    return int(v[0]) if len(v) == 2 and v[0] == v[1] else None


# ------------------------------------------------------------------------------------------------
# folding a live model
# ------------------------------------------------------------------------------------------------
class _Folder:
    def __init__(
        self, frac_bits: int, input_shape, input_bits: int, input_scale: float, input_max: int | None
    ):
        if not 2 <= frac_bits <= 30:
            raise DeployError(f"frac_bits must be in 2..30, got {frac_bits}")
        self.F = int(frac_bits)
        imax = int(input_max if input_max is not None else 2**input_bits - 1)
        self.program = Program(
            input={
                "name": "input",
                "shape": [int(s) for s in input_shape],
                "bits": int(input_bits),
                "scale": float(input_scale),
                "max": imax,
            },
            frac_bits=self.F,
            nodes=[],
        )
        self.scales = {"input": float(input_scale)}  # float scale of every activation tensor
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def _add(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        name = self._name(prefix)
        self.program.nodes.append({"name": name, "op": op, "inputs": inputs, "output": name, **attrs})
        return name

    def _affine(self, op, x, layer, bn, prefix, **attrs) -> str:
        """conv/linear (+ BN) -> fixed-point current."""
        wq = layer.weight_quant
        try:
            codes, s_w = wq.to_int(layer.weight)
        except TypeError as e:
            raise DeployError(f"{prefix}: {e}") from None
        bits = int(wq.bits)
        codes = codes.to(torch.int64).numpy()
        cout = codes.shape[0]
        # one weight scale per layer (a float) or per output channel (learned per-channel steps)
        s_w = np.asarray(
            s_w.detach().double().numpy() if isinstance(s_w, torch.Tensor) else s_w, dtype=np.float64
        )
        mult = np.broadcast_to(s_w.reshape(-1), (cout,)).astype(np.float64) * self.scales[x]
        bias = np.zeros(cout, dtype=np.float64)
        if layer.bias is not None:
            bias = layer.bias.detach().double().numpy().copy()
        if bn is not None:
            if bn.training:
                raise DeployError("fold needs the model in eval mode (BatchNorm running statistics)")
            a = bn.weight.detach().double().numpy() / np.sqrt(
                bn.running_var.detach().double().numpy() + bn.eps
            )
            mult = mult * a
            bias = (bias - bn.running_mean.detach().double().numpy()) * a + bn.bias.detach().double().numpy()
        peak = float(np.abs(mult).max()) * 2.0**self.F
        S = 0 if peak == 0 else max(0, M_BITS - math.floor(math.log2(peak)))
        S = min(S, 40)
        # Prefer the largest shift <= S whose whole pre-shift sum acc*M + B + R provably stays below
        # 2^23 (then the fast path computes it exactly in float32), as long as M keeps at least
        # F32_M_BITS significant bits; otherwise keep the 16-bit multiplier (int64 epilogue).
        codes_sum = int(np.abs(codes.reshape(cout, -1)).sum(1).max(initial=0))
        acc_max = codes_sum * analyze(self.program)[x]["max"]
        for s_try in range(S, -1, -1):
            M_try = np.abs(_rhu(mult * 2.0 ** (self.F + s_try)))
            if M_try.max(initial=0) < 2**F32_M_BITS:
                break
            B_try = np.abs(_rhu(bias * 2.0 ** (self.F + s_try)))
            if acc_max * M_try.max(initial=0) + B_try.max(initial=0) + 2**s_try < F32_BUDGET:
                S = s_try
                break
        M = _rhu(mult * 2.0 ** (self.F + S)).astype(np.int64)
        B = _rhu(bias * 2.0 ** (self.F + S)).astype(np.int64)
        name = self._name(prefix)
        self.program.arrays[name + ".weight"] = codes.astype(np.int8 if bits <= 8 else np.int16)
        self.program.arrays[name + ".M"] = M
        self.program.arrays[name + ".B"] = B
        self.program.nodes.append(
            {
                "name": name,
                "op": op,
                "inputs": [x],
                "output": name,
                "bits": bits,
                "max_code": int(wq.max_code),
                "shift": int(S),
                "weight": name + ".weight",
                "M": name + ".M",
                "B": name + ".B",
                **attrs,
            }
        )
        return name

    def conv(self, x: str, conv, bn, prefix="conv") -> str:
        if (
            conv.groups != 1
            or conv.dilation != (1, 1)
            or conv.kernel_size[0] != conv.kernel_size[1]
            or conv.stride[0] != conv.stride[1]
            or conv.padding[0] != conv.padding[1]
            or conv.padding_mode != "zeros"
        ):
            raise DeployError("only square, ungrouped, undilated, zero-padded convolutions are supported")
        return self._affine(
            "conv",
            x,
            conv,
            bn,
            prefix,
            kernel=int(conv.kernel_size[0]),
            stride=int(conv.stride[0]),
            padding=int(conv.padding[0]),
        )

    def linear(self, x: str, lin, prefix="fc") -> str:
        return self._affine("linear", x, lin, None, prefix)

    def gate(self, x: str, gate) -> str | None:
        """Integer form of the learned channel gate (see docs/deploy.md, "Pruning")."""
        if getattr(gate, "spatial", False):
            raise DeployError(
                "the spatial block gate has no integer export yet; train with spatial_gate=False"
            )
        if not getattr(gate, "learned", False) or gate.predictor is None:
            return None
        xi = analyze(self.program)[x]
        c_in, h, w = xi["shape"]
        hw = h * w
        beta = self.scales[x] / (hw * float(gate.temperature))
        D = hw * xi["max"]
        kb = max(0, math.ceil(math.log2(D + 1) / 2))
        fe = GATE_EXP_BITS
        lo = _rhu(np.exp(-beta * np.arange(1 << kb)) * 2.0**fe).astype(np.int64)
        hi = _rhu(np.exp(-beta * (np.arange((D >> kb) + 1) << kb).astype(np.float64)) * 2.0**fe).astype(
            np.int64
        )
        a = float(gate.binarize_at)
        theta = math.log(a / (1 - a))
        # the predictor runs on its quantized weights (predictor_bits), exactly as in training
        W = gate.predictor_quant(gate.predictor.weight.detach()).double().reshape(gate.c_out, c_in).numpy()
        b = gate.predictor.bias.detach().double().numpy()
        kappa = float(c_in) if gate.input_scale else 1.0
        A = _rhu((kappa * W + (b - theta)[:, None]) * 2.0**GATE_A_BITS).astype(np.int64)
        name = self._name("gate")
        self.program.arrays[name + ".A"] = A
        self.program.arrays[name + ".exp_hi"] = hi
        self.program.arrays[name + ".exp_lo"] = lo
        self.program.nodes.append(
            {
                "name": name,
                "op": "channel_gate",
                "inputs": [x],
                "output": name,
                "lo_bits": int(kb),
                "exp_frac_bits": fe,
                "A": name + ".A",
                "exp_hi": name + ".exp_hi",
                "exp_lo": name + ".exp_lo",
            }
        )
        return name

    def lif(self, cur: str, neuron, prefix="lif", gate: str | None = None) -> str:
        if neuron.membrane is None:
            raise DeployError("FP32 membrane (mode 'fp32') has no integer form; export a quantized model")
        prior = getattr(neuron, "prior", None)
        tau = float(neuron.tau)
        k = 0 if tau == 1.0 else (round(-math.log2(tau)) if tau > 0 else -1)
        if k < 0 or 2.0**-k != tau or k > self.F:
            raise DeployError(
                f"leak tau={tau} is not a power of two 2^-k with k <= F; cannot be an exact shift"
            )
        v = neuron.threshold.detach().double().reshape(-1).numpy()
        V = _rhu(v * 2.0**self.F).astype(np.int64)
        name = self._name(prefix)
        self.program.arrays[name + ".V"] = V
        lb, ub = int(neuron.membrane.lb), int(neuron.membrane.ub)
        node = {
            "name": name,
            "op": "lif",
            "inputs": [cur],
            "output": name,
            "tau_shift": int(k),
            "lb": lb,
            "ub": ub,
            "V": name + ".V",
        }
        if prior is not None or gate is not None:
            shape = analyze(self.program)[cur]["shape"]
            hw = int(np.prod(shape[1:])) if len(shape) > 1 else 0
            ch = bool(prior is not None and prior.channel and hw > 0)
            p_min = lb * max(hw, 1)
            if (
                ch
            ):  # keep iff float32(sum/HW) >= float32(thr), as torch computes the mean: as an integer bound
                thr = np.float32(prior.channel_threshold)
                cands = [s_ for s_ in range(lb * hw, ub * hw + 1) if np.float32(s_) / np.float32(hw) >= thr]
                p_min = cands[0] if cands else ub * hw + 1
            sp = bool(prior is not None and prior.spatial)
            level = math.floor(prior.level_for(neuron.membrane)) if sp else lb - 1
            node.update(
                op="lif_pruned",
                prior_channel=int(ch),
                prior_channel_min=int(p_min),
                prior_spatial=int(sp),
                prior_spatial_level=int(level),
            )
            if gate is not None:
                node["inputs"] = [cur, gate]
        self.program.nodes.append(node)
        self.scales[name] = 1.0
        return name

    def block(self, x: str, block) -> str:
        cur = self.conv(x, block.conv, block.bn)
        gate = self.gate(x, block.gate) if getattr(block, "gate", None) is not None else None
        return self.lif(cur, block.neuron, gate=gate)

    def sumpool(self, x: str, k: int) -> str:
        name = self._add("sumpool", [x], "pool", kernel=int(k))
        self.scales[name] = self.scales[x] / (k * k)
        return name

    def maxpool(self, x: str, k: int) -> str:
        name = self._add("maxpool", [x], "maxpool", kernel=int(k))
        self.scales[name] = self.scales[x]
        return name

    def gsumpool(self, x: str, hw: int) -> str:
        name = self._add("gsumpool", [x], "gpool")
        self.scales[name] = self.scales[x] / hw
        return name

    def flatten(self, x: str) -> str:
        name = self._add("flatten", [x], "flat")
        self.scales[name] = self.scales[x]
        return name


def fold_model(
    model: nn.Module,
    input_shape,
    input_bits: int = 8,
    input_scale: float | None = None,
    frac_bits: int = 16,
    input_max: int | None = None,
) -> Program:
    """Fold a trained VGG9, ResNet19 or SpikingYOLO (quant mode, eval) into an integer :class:`Program`.

    ``input_shape``: (C, H, W) of one step. Input codes are integers in [0, input_max]
    (default 2^input_bits - 1); ``input_scale`` maps codes to the float input the model was trained
    on (default 1/(2^bits - 1): uint8 pixel / 255; use ``input_bits=1, input_scale=1`` for {0,1}
    event frames, or the count range for count histograms).
    """
    from spquant.layers import ConvBNLIF, SeqModule
    from spquant.models.resnet import ResNet19
    from spquant.models.vgg import VGG9
    from spquant.models.yolo import SpikingYOLO

    if model.training:
        raise DeployError("fold needs the model in eval mode: call model.eval() first")
    if input_scale is None:
        input_scale = 1.0 / (2**input_bits - 1)
    f = _Folder(frac_bits, input_shape, input_bits, input_scale, input_max)
    C, H, W = input_shape
    with torch.no_grad():
        if isinstance(model, VGG9):
            x = "input"
            for layer in model.features:
                if isinstance(layer, ConvBNLIF):
                    x = f.block(x, layer)
                elif isinstance(layer, SeqModule) and isinstance(layer.module, nn.AvgPool2d):
                    ks, stride = _square(layer.module.kernel_size), _square(layer.module.stride)
                    if ks is None or stride != ks or layer.module.padding not in (0, (0, 0)):
                        raise DeployError("only non-overlapping unpadded average pooling is supported")
                    x = f.sumpool(x, ks)
                else:
                    raise DeployError(f"unsupported layer in VGG9.features: {type(layer).__name__}")
            x = f.flatten(x)
            f.linear(x, model.classifier, prefix="logits")
        elif isinstance(model, ResNet19):
            x = f.block("input", model.stem)
            for blk in model.layers:
                s1 = f.block(x, blk.conv1)
                c2 = f.conv(s1, blk.conv2, blk.bn2)
                if blk.shortcut is not None:
                    sc = f.conv(x, blk.shortcut[0], blk.shortcut[1], prefix="short")
                else:
                    sc = f._add("scale_current", [x], "ident", K=int(_rhu(f.scales[x] * 2.0**f.F)))
                    if f.scales[x] * 2.0**f.F != int(_rhu(f.scales[x] * 2.0**f.F)):
                        raise DeployError("identity shortcut scale is not exact in fixed point")
                cur = f._add("add", [c2, sc], "add")
                x = f.lif(cur, blk.neuron2)
            _, h, w = analyze(f.program)[x]["shape"]
            x = f.gsumpool(x, h * w)
            x = f.lif(f.linear(x, model.fc1), model.fc1_neuron)
            f.linear(x, model.fc2, prefix="logits")
        elif isinstance(model, SpikingYOLO):
            x = "input"
            for layer in model.features:
                if isinstance(layer, ConvBNLIF):
                    x = f.block(x, layer)
                elif isinstance(layer, SeqModule) and isinstance(layer.module, nn.MaxPool2d):
                    mp = layer.module
                    ks, st = _square(mp.kernel_size), _square(mp.stride)
                    if (
                        ks is None
                        or st != ks
                        or mp.padding not in (0, (0, 0))
                        or mp.dilation not in (1, (1, 1))
                        or mp.ceil_mode
                    ):
                        raise DeployError("only non-overlapping unpadded max pooling is supported")
                    x = f.maxpool(x, ks)
                else:
                    raise DeployError(f"unsupported layer in SpikingYOLO.features: {type(layer).__name__}")
            # the head runs on the spikes of every step; the mean over T of its outputs is the prediction
            f.conv(x, model.head, None, prefix="head")
        else:
            raise DeployError(f"fold supports VGG9, ResNet19 and SpikingYOLO, got {type(model).__name__}")
    f.program.meta = {
        "model": type(model).__name__,
        "spec": getattr(model, "spec", None).to_dict() if hasattr(model, "spec") else {},
    }
    if isinstance(model, SpikingYOLO):
        f.program.meta["detection"] = {
            "num_classes": int(model.num_classes),
            "anchors": [[float(v) for v in a] for a in model.anchors.tolist()],
            "stride": [int(s) for s in model.stride],
            "grid": [int(g) for g in model.grid],
            "input_size": [int(s) for s in model.input_size],
        }
    analyze(f.program)
    return f.program
