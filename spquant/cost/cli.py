"""`spquant cost`: static memory / MAC figures of a model, or measured ones of a trained run.

    spquant cost --model vgg9 --input 3x48x48 --T 10 --wbits 2 --ubits 1.58 [--width W] [--classes N] [--json]
    spquant cost --checkpoint RUN [--data test|train] [--batches N] [--batch-size B] [--json]   (measured)

Quantized models also get their memory *as deployed*: the integer program the model folds into
(packed weight codes, per-channel fixed-point multipliers and biases, integer thresholds and gate
tables at the bit widths their values need, the packed membrane), beside the paper's convention
(spquant.deploy.memory). ``--spq FILE`` counts an exported .spq model.

MB = 10^6 bytes. ``--ubits 1.58`` means a ternary membrane: reported at the paper's 2-bit
convention and at our packed 1.6 bits. ``--ubits 32`` is an FP32 membrane; an integer b in 2..16
is a signed b-bit grid.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "run_cost", "spec_for_bits", "parse_input"]


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x48x48' -> (3, 48, 48)."""
    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"--input must look like CxHxW (e.g. 3x48x48), got {text!r}")
    return parts  # type: ignore[return-value]


def spec_for_bits(
    wbits: int, ubits: float, mode: str | None = None, first_bits=8, last_bits=8, prune: dict | None = None
):
    """The QuantSpec for weight bits ``wbits`` and membrane bits ``ubits`` (1.58 = ternary)."""
    from spquant.models import QuantSpec

    if abs(ubits - 1.58) < 0.01 or abs(ubits - 1.6) < 0.01:
        lb, ub = -1, 1
    elif ubits == 32:
        lb = ub = None
    elif float(ubits).is_integer() and 2 <= ubits <= 16:
        b = int(ubits)
        lb, ub = -(2 ** (b - 1)), 2 ** (b - 1) - 1
    else:
        raise ValueError(f"--ubits must be 1.58 (ternary), 2..16 or 32, got {ubits}")
    if mode is None:
        mode = "fp32" if (wbits == 32 and lb is None) else "quant"
    if mode == "fp32":
        if wbits != 32 or lb is not None:
            raise ValueError("mode fp32 needs --wbits 32 --ubits 32")
        return QuantSpec(mode="fp32")
    if lb is None:
        raise ValueError(f"mode {mode} has an integer membrane; --ubits 32 is only for mode fp32")
    return QuantSpec(
        mode=mode,
        weight_bits=wbits,
        first_bits=first_bits,
        last_bits=last_bits,
        membrane_lb=lb,
        membrane_ub=ub,
        prune=dict(prune or {}),
    )


def _bits_arg(text: str):
    if text.lower() in ("none", "fp32"):
        return None
    return int(text)


def deployed_for_model(model, input_shape):
    """Memory as deployed of a live quantized model (folded in eval mode, provably silent channels
    removed as export removes them), or None for FP32 models."""
    from spquant.deploy.fold import fold_model
    from spquant.deploy.memory import deployed_memory
    from spquant.deploy.program import DeployError

    spec = getattr(model, "spec", None)
    if spec is None or not spec.quantized:
        return None
    was_training = model.training
    model.eval()
    try:
        from spquant.deploy.compact import compact

        return deployed_memory(compact(fold_model(model, tuple(input_shape)))[0])
    except DeployError:
        return None
    finally:
        model.train(was_training)


def run_cost(args: argparse.Namespace) -> int:
    from spquant.cost import format_measured, format_static, static_cost
    from spquant.deploy.memory import deployed_memory, format_deployed
    from spquant.report import measured_cost_from_run

    if getattr(args, "spq", None):
        from spquant.deploy.targets.spq import ModelFileError, load

        try:
            mem = deployed_memory(load(args.spq))
        except ModelFileError as exc:
            print(f"spquant cost: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(mem.to_dict(), indent=2) if args.json else format_deployed(mem, str(args.spq)))
        return 0
    if args.checkpoint:
        try:
            cost = measured_cost_from_run(
                args.checkpoint,
                data=args.data,
                max_batches=args.batches,
                batch_size=args.batch_size,
                checkpoint=args.latest,
            )
        except RuntimeError as exc:
            print(f"spquant cost: {exc}", file=sys.stderr)
            return 2
        mem = _deployed_for_run(args.checkpoint, args.latest)
        if args.json:
            d = cost.to_dict()
            d["deployed"] = mem.to_dict() if mem is not None else None
            print(json.dumps(d, indent=2))
        else:
            print(format_measured(cost, str(args.checkpoint)))
            if mem is not None:
                print(format_deployed(mem, str(args.checkpoint)))
        return 0
    from spquant.models import build_model

    default_input = {"vgg9": (3, 48, 48), "resnet19": (3, 32, 32)}[args.model]
    shape = args.input or default_input
    try:
        spec = spec_for_bits(args.wbits, args.ubits, args.mode, args.first_bits, args.last_bits)
    except ValueError as exc:
        print(f"spquant cost: {exc}", file=sys.stderr)
        return 2
    model = build_model(
        args.model,
        num_classes=args.classes,
        in_channels=shape[0],
        input_size=shape[1:],
        width=args.width,
        spec=spec,
    )
    cost = static_cost(model, shape, bn=args.bn, gate_bits=args.gate_bits)
    mem = deployed_for_model(model, shape)
    if args.json:
        d = cost.to_dict()
        d["deployed"] = mem.to_dict() if mem is not None else None
        d.update(
            model=args.model,
            T=args.T,
            dense_macs_all_steps=cost.dense_macs * args.T,
            spec=spec.to_dict(),
            width=args.width,
            classes=args.classes,
        )
        print(json.dumps(d, indent=2))
    else:
        print(
            format_static(
                cost,
                f"{args.model} (W{args.wbits}/U{args.ubits:g}, width {args.width:g}, {args.classes} classes)",
            )
        )
        print(f"  dense MACs, T={args.T}     {cost.dense_macs * args.T:,} per sample")
        if mem is not None:
            print(format_deployed(mem, "fresh instance (widths of untrained parameters)"))
    return 0


def _deployed_for_run(run_dir, latest: bool):
    from spquant.train import load_run

    loaded = load_run(run_dir, checkpoint=latest)
    cfg = loaded["config"]
    return deployed_for_model(loaded["model"], (cfg.model.in_channels, *cfg.model.input))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cost",
        help="memory and operation counts of a model (static) or a trained run (measured)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=("vgg9", "resnet19"), default="vgg9")
    p.add_argument(
        "--input",
        type=parse_input,
        default=None,
        help="CxHxW (default 3x48x48 for vgg9, 3x32x32 for resnet19)",
    )
    p.add_argument("--T", type=int, default=1, help="time steps (dense MACs over T steps are also printed)")
    p.add_argument(
        "--wbits",
        type=int,
        default=2,
        help="weight bits of hidden layers (1 = binary, 2 = ternary, 32 = FP32)",
    )
    p.add_argument(
        "--ubits", type=float, default=1.58, help="membrane bits: 1.58 = ternary, 2..16, 32 = FP32"
    )
    p.add_argument(
        "--first-bits", type=_bits_arg, default=8, help="bits of the first conv (default 8; 'none' = FP32)"
    )
    p.add_argument(
        "--last-bits", type=_bits_arg, default=8, help="bits of the classifier (default 8; 'none' = FP32)"
    )
    p.add_argument(
        "--mode", choices=("fp32", "quant", "spquant"), default=None, help="default: fp32 if 32/32 else quant"
    )
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument(
        "--bn",
        choices=("count", "ignore"),
        default="count",
        help="BN affine params at 32 bits, or not counted",
    )
    p.add_argument(
        "--gate-bits",
        type=float,
        default=None,
        help="bits of gate predictor weights (default: their quantizer's; 0 = gates not counted)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--checkpoint", default=None, help="run folder of a trained model (measured cost on its own data)"
    )
    p.add_argument(
        "--data",
        default="test",
        choices=("test", "train"),
        help="split of the run's data config (default test)",
    )
    p.add_argument("--batches", type=int, default=10, help="batches for the measured cost (default 10)")
    p.add_argument("--batch-size", type=int, default=100, help="samples per batch for the measured cost")
    p.add_argument(
        "--latest", action="store_true", help="use the run's newest checkpoint instead of model.safetensors"
    )
    p.add_argument(
        "--spq", default=None, metavar="FILE", help="memory as deployed of an exported .spq integer model"
    )
    p.set_defaults(func=run_cost)
