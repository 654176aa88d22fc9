"""The closing measurements of the deployment issue (docs/deploy.md):

accuracy of fake-quant vs deploy-sim vs the integer interpreter on the full MNIST test set and on
emulated-MNIST events, bit-exactness counts, file size vs memory accounting.

    python experiments/deploy_closing.py --out closing.json [--steps 400] [--event-train 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spquant.deploy import DeploySim, Interpreter, file_report, fold_model, save
from spquant.models import VGG9, QuantSpec


def _train(model, x_u8, y, steps, T, batch=32, lr=1e-2, seed=0, static=True):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        if step % 20 == 0:
            print(f"train step {step}/{steps}", flush=True)
        idx = g.integers(0, len(y), batch)
        xb = torch.from_numpy(x_u8[idx]).float()
        xb = xb.div(255)[None].expand(T, *xb.shape) if static else xb.transpose(0, 1)
        loss = torch.nn.functional.cross_entropy(model(xb).mean(0), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def _evaluate(model, program, x_codes, y, T, static, n_ref=1000, batch=250):
    """x_codes: uint8 [N, C, H, W] (static, pixels) or [N, T, C, H, W] (frames {0,1})."""
    sim, interp = DeploySim(program), Interpreter(program)
    res = {"samples": int(len(y))}
    preds = {"fake_quant": [], "deploy_sim": [], "interpreter_fast": []}
    logits_equal = 0
    ref_equal = 0
    ref_checked = 0
    times = {"fake_quant": 0.0, "deploy_sim": 0.0, "interpreter_fast": 0.0}
    for i in range(0, len(y), batch):
        xb = x_codes[i : i + batch]
        codes = np.broadcast_to(xb[None], (T,) + xb.shape) if static else np.moveaxis(xb, 1, 0)
        xf = torch.from_numpy(np.ascontiguousarray(codes)).float()
        scale = program.input["scale"]
        xf = xf.div(round(1 / scale)) if scale < 1 else xf * scale  # as in training: pixel / 255
        t = time.perf_counter()
        with torch.no_grad():
            fq = model(xf)
        times["fake_quant"] += time.perf_counter() - t
        t = time.perf_counter()
        env = sim.run_codes(torch.from_numpy(np.ascontiguousarray(codes)))
        ds = env[program.output].numpy().astype(np.int64)
        times["deploy_sim"] += time.perf_counter() - t
        t = time.perf_counter()
        fast = interp.run(xb if static else codes, T=T if static else None)
        times["interpreter_fast"] += time.perf_counter() - t
        preds["fake_quant"].append(fq.mean(0).argmax(-1).numpy())
        preds["deploy_sim"].append(ds.sum(0).argmax(-1))
        preds["interpreter_fast"].append(fast.sum(0).argmax(-1))
        logits_equal += int(np.all(ds == fast, axis=(0, 2)).sum())
        if ref_checked < n_ref:  # every layer, reference path
            k = min(batch, n_ref - ref_checked)
            ref = interp.run_all(np.ascontiguousarray(codes[:, :k]), path="reference")
            same = np.ones(k, dtype=bool)
            for name, v in ref.items():
                same &= np.all(
                    (env[name][:, :k].numpy().astype(np.int64) == v).reshape(T, k, -1), axis=(0, 2)
                )
            ref_equal += int(same.sum())
            ref_checked += k
    for k, v in preds.items():
        p = np.concatenate(v)
        res[f"accuracy_{k}"] = float((p == y).mean())
    pf, ps = np.concatenate(preds["fake_quant"]), np.concatenate(preds["deploy_sim"])
    res["prediction_agreement_fake_quant_vs_deploy_sim"] = float((pf == ps).mean())
    res["gap_points_fake_quant_minus_deploy_sim"] = round(
        100 * (res["accuracy_fake_quant"] - res["accuracy_deploy_sim"]), 3
    )
    res["samples_logits_identical_sim_vs_fast"] = logits_equal
    res["samples_all_layers_identical_sim_vs_reference"] = f"{ref_equal}/{ref_checked}"
    res["seconds"] = {k: round(v, 1) for k, v in times.items()}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="closing.json")
    ap.add_argument("--mnist", default=None, help="MNIST IDX folder (default $SPQUANT_DATA/mnist)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--event-steps", type=int, default=300)
    ap.add_argument("--event-train", type=int, default=2000)
    ap.add_argument("--T", type=int, default=2)
    ap.add_argument("--frac-bits", type=int, nargs="+", default=[16])
    ap.add_argument("--n-ref", type=int, default=1000)
    ap.add_argument("--width", type=int, nargs=2, default=[8, 16])
    ap.add_argument("--skip-events", action="store_true")
    args = ap.parse_args(argv)
    out = {}
    outdir = Path(args.out).resolve().parent
    from spquant.data.idx import read_idx
    from spquant.data.roots import data_root

    d = data_root("mnist", args.mnist)
    xtr, ytr = (
        read_idx(d / "train-images-idx3-ubyte.gz")[:, None],
        read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64),
    )
    xte, yte = (
        read_idx(d / "t10k-images-idx3-ubyte.gz")[:, None],
        read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )
    spec = QuantSpec(mode="quant")
    torch.manual_seed(0)
    c1, c2 = args.width
    model = VGG9(10, in_channels=1, input_size=28, spec=spec, plan=(c1, "A", c2, "A"))
    t = time.time()
    _train(model, xtr, ytr, args.steps, args.T)
    out["mnist"] = {
        "model": f"VGG9 plan {c1}-A-{c2}-A-FC, ternary hidden, 8-bit first/last, ternary membrane",
        "train_steps": args.steps,
        "batch": 32,
        "T": args.T,
        "train_seconds": round(time.time() - t, 1),
    }
    for F in args.frac_bits:
        program = fold_model(model, (1, 28, 28), frac_bits=F)
        path = outdir / f"mnist_F{F}.spq"
        save(program, path)
        r = _evaluate(model, program, xte, yte, args.T, static=True, n_ref=args.n_ref)
        r["file"] = file_report(path)
        out["mnist"][f"F{F}"] = r
        print(json.dumps({f"mnist F{F}": r}), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    if not args.skip_events:
        from spquant.data.loader import mnist_frames

        T = 4
        ev_tr, ey_tr = mnist_frames(
            "train",
            T=T,
            encoding="events",
            source="embedded",
            limit=args.event_train,
            cache_dir=outdir / "emu_cache",
        )
        ev_te, ey_te = mnist_frames(
            "test", T=T, encoding="events", source="embedded", cache_dir=outdir / "emu_cache"
        )
        pad = ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1))  # 34x34 -> 36x36 (two 2x2 poolings)
        ev_tr, ev_te = np.pad(ev_tr.numpy(), pad), np.pad(ev_te.numpy(), pad)
        torch.manual_seed(0)
        em = VGG9(10, in_channels=3, input_size=36, spec=spec, plan=(c1, "A", c2, "A"))
        t = time.time()
        _train(em, ev_tr, ey_tr.numpy(), args.event_steps, T, static=False)
        out["events"] = {
            "data": f"emulated MNIST events (embedded subset, {len(ey_tr)} train / {len(ey_te)} test), polarity3 frames, T={T}, 36x36",
            "train_steps": args.event_steps,
            "train_seconds": round(time.time() - t, 1),
        }
        program = fold_model(em, (3, 36, 36), input_bits=1, input_scale=1.0, frac_bits=16)
        path = outdir / "events_F16.spq"
        save(program, path)
        r = _evaluate(em, program, ev_te, ey_te.numpy(), T, static=False, n_ref=args.n_ref)
        r["file"] = file_report(path)
        out["events"]["F16"] = r
        print(json.dumps({"events F16": r}), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
