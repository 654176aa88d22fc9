"""Detection rows of RESULTS.md: FP32 / Quant / SpQuant spiking YOLO on moving-digits events, and the
Quant and SpQuant detectors run by the integer interpreter from their ``.spq`` files.

    OMP_NUM_THREADS=1 python experiments/detect_results.py --steps 2000 --ablation grid8_12k_cr1 \
        --quantized grid8_12k_cr1_init:1000                       # train (or reuse ablation runs) + write
    python experiments/detect_results.py --write-only            # rewrite from saved rows

Each mode trains the ``detect-moving-digits`` recipe for ``--steps`` optimizer steps (the loop of
``experiments/detect_ablations.py``), is scored with VOC mAP@0.5 and COCO mAP@[.5:.95] on the test
set, its memory and the three operation accountings (docs/method.md) are measured; the quantized
ones are folded to ``.spq``, loaded back and run by the integer interpreter on every test sample,
whose integer outputs are compared with deploy-simulation's sample by sample. Rows are saved as JSON
under ``runs/detect-results/``; the section between the ``detection`` markers of RESULTS.md and
docs/detection.md and ``docs/img/detections_integer.png`` are written from those files only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detect_ablations import ABLATIONS, slot_class_accuracy, train_detector_steps  # noqa: E402
from sections import write_marked  # noqa: E402

from spquant.data.detection import collate_detection  # noqa: E402
from spquant.train import load_config  # noqa: E402
from spquant.train.data import load_split  # noqa: E402
from spquant.train.loop import evaluate  # noqa: E402

OUT = ROOT / "runs" / "detect-results"
RECIPE = "detect-moving-digits"
MODES = ("fp32", "quant", "spquant")
START, END = "<!-- detection:start -->", "<!-- detection:end -->"


def _cost(model, test_ds, cfg) -> dict:
    from spquant.cost import measure_cost, static_cost

    st = static_cost(model, input_shape=(cfg.model.in_channels, *cfg.model.input)).to_dict()
    batches = []
    for i in range(0, 256, 64):
        x, _ = collate_detection([test_ds[j] for j in range(i, i + 64)])
        batches.append((x, torch.zeros(x.shape[1], dtype=torch.long)))
    me = measure_cost(model, batches).to_dict()
    me.pop("layers", None)
    return {"static": {k: v for k, v in st.items() if k != "layers"}, "measured": me}


def _integer(model, test_ds, cfg, mode: str) -> dict:
    from spquant.deploy import DeploySim, Interpreter, file_report, fold_model, load, save
    from spquant.deploy.detection import evaluate_integer_detector

    program = fold_model(model, (cfg.model.in_channels, *cfg.model.input), input_bits=8, input_scale=1.0)
    path = OUT / f"{mode}.spq"
    save(program, path)
    loaded = load(path)
    interp, sim = Interpreter(loaded), DeploySim(program)
    same = [0, 0]
    t_int = [0.0]

    def batches():
        for i in range(0, len(test_ds), 50):
            x, boxes = collate_detection([test_ds[j] for j in range(i, min(len(test_ds), i + 50))])
            codes = program.encode_input(x)
            assert np.array_equal(codes, x.numpy()), "event counts must be their own integer codes"
            yield codes, boxes

    def run(codes):
        t0 = time.perf_counter()
        out = interp.run(codes)
        t_int[0] += time.perf_counter() - t0
        ref = sim.run_codes(torch.from_numpy(codes))[program.output].numpy().astype(np.int64)
        same[0] += int(np.all(out == ref, axis=tuple(i for i in range(out.ndim) if i != 1)).sum())
        same[1] += out.shape[1]
        return out

    ev = evaluate_integer_detector(run, loaded, batches(), cfg.detect.conf_threshold, cfg.detect.nms_iou)
    sim_ev = evaluate_integer_detector(
        lambda c: sim.run_codes(torch.from_numpy(c))[program.output].numpy().astype(np.int64),
        program,
        batches(),
        cfg.detect.conf_threshold,
        cfg.detect.nms_iou,
    )
    x, _ = collate_detection([test_ds[j] for j in range(16)])
    interp.run(program.encode_input(x), path="reference")
    ops = {k: v / 16 for k, v in interp.last_counts.as_dict().items()}
    return {
        "mAP50": ev["mAP50"],
        "mAP50_95": ev["mAP50_95"],
        "sim_mAP50": sim_ev["mAP50"],
        "sim_mAP50_95": sim_ev["mAP50_95"],
        "samples": ev["samples"],
        "bit_exact_samples": same[0],
        "compared_samples": same[1],
        "interpreter_s": round(t_int[0], 2),
        "reference_ops_per_sample": ops,
        "file": file_report(path),
        "detections": [d.tolist() for d in ev["detections"][:8]],
    }


def _from_ablation(ablation: str, mode: str, steps: int, seed: int, cfg: dict):
    """The model an ``experiments/detect_ablations.py`` run with the same recipe overrides, options,
    mode, steps and seed saved (so a row is not trained twice), with its recorded training time;
    else None."""
    log = ROOT / "runs" / "detect-ablations" / "results.jsonl"
    if not log.is_file():
        return None
    overrides, opts = ABLATIONS[ablation]
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    recs = [
        r
        for r in recs
        if (r["mode"], r["steps"], r["seed"]) == (mode, steps, seed)
        and r["overrides"] == overrides
        and r["opts"] == opts
    ]
    recs = [r for r in recs if (ROOT / "runs" / "detect-ablations" / _weights(r)).is_file()]
    if not recs:
        return None
    weights = ROOT / "runs" / "detect-ablations" / _weights(recs[-1])
    model = cfg.build_model()
    model.load_state_dict(torch.load(weights, weights_only=True))
    data = (load_split(cfg, "train").dataset, load_split(cfg, "test").dataset)
    print(f"{mode}: the model of ablation run {weights.name}")
    return (
        model.eval(),
        data,
        {
            "history": [recs[-1]["last"]],
            "train_s": recs[-1]["train_s"],
            "init_train_s": recs[-1].get("init_train_s"),
            "from_ablation": weights.name,
        },
    )


def _weights(rec: dict) -> str:
    return rec.get("weights") or f"{rec['name']}-{rec['mode']}-{rec['steps']}.pt"


def run_mode(mode: str, steps: int, seed: int, ablation: str) -> dict:
    overrides, opts = ABLATIONS[ablation]
    path = OUT / f"{mode}.json"
    if path.is_file():
        row = json.loads(path.read_text())
        if row.get("steps") == steps and row.get("ablation") == ablation:
            print(f"{mode}: reusing {path}")
            return row
    cfg = load_config(f"{RECIPE}:{mode}", overrides + [f"train.seed={seed}"])
    got = _from_ablation(ablation, mode, steps, seed, cfg)
    if got is None:
        got = train_detector_steps(cfg, steps, opts, seed, log=lambda s: print(s, flush=True))
    model, (train_ds, test_ds), info = got
    torch.save(model.state_dict(), OUT / f"{mode}.pt")
    t0 = time.time()
    metrics = evaluate(model, load_split(cfg, "test"), cfg)
    row = {
        "mode": mode,
        "steps": steps,
        "seed": seed,
        "ablation": ablation,
        "overrides": overrides,
        "opts": opts,
        "train_s": info["train_s"],
        "init_train_s": info.get("init_train_s"),
        "pretrain_steps": info.get("pretrain_steps", 0),
        "threads": torch.get_num_threads(),
        "history": info["history"],
        "mAP50": metrics["mAP50"],
        "mAP50_95": metrics["mAP50_95"],
        "mAP50_agnostic": metrics["mAP50_agnostic"],
        "slot_class_acc": slot_class_accuracy(model, test_ds),
        "test_samples": len(test_ds),
        "train_samples": len(train_ds),
        "cost": _cost(model, test_ds, cfg),
        "eval_s": round(time.time() - t0, 1),
    }
    if mode != "fp32":
        row["integer"] = _integer(model, test_ds, cfg, mode)
    path.write_text(json.dumps(row, indent=1))
    return row


def picture(rows: dict) -> None:
    """Detections of the integer SpQuant (else Quant) model on the first 8 test samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spquant.detect.plot import draw_detections

    mode = "spquant" if "spquant" in rows else "quant"
    cfg = load_config(f"{RECIPE}:{mode}", rows[mode]["overrides"])
    test_ds = load_split(cfg, "test").dataset
    dets = rows[mode]["integer"]["detections"]
    fig, axes = plt.subplots(2, 4, figsize=(12.8, 6.8))
    for i, ax in enumerate(axes.flat):
        frames, boxes = test_ds[i]
        best = [d for d in sorted(dets[i], key=lambda d: -d[4])[:4] if d[4] >= 0.1]  # 4 best, score >= 0.1
        draw_detections(ax, frames, boxes, best, fontsize=8)
        ax.set_title(f"test sample {i}", fontsize=8)
    fig.suptitle(
        f"{mode} detector run by the integer interpreter (.spq): true boxes white dashed, "
        "the 4 best detections cyan (class, score = objectness x class probability, >= 0.1)",
        fontsize=9,
    )
    fig.tight_layout()
    out = ROOT / "docs" / "img" / "detections_integer.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _how_trained(r: dict) -> str:
    text = f"entry `{r['ablation']}`"
    if r["overrides"]:
        text += " (" + ", ".join(f"`{o}`" for o in r["overrides"]) + ")"
    opts = r.get("opts", {})
    if opts.get("pretrain"):
        text += (
            f", {opts['pretrain']} steps of backbone pre-training on digit crops of the training set, then"
        )
    if opts.get("init"):
        text += (
            f": quantization-aware fine-tuning of the FP32 model `{opts['init']}` (BN statistics re-estimated "
            "and, in SpQuant, gates opened first, as `spquant train --init-from RUN` does),"
        )
    text += f"{'' if opts.get('init') else ','} {r['steps']:,} detector Adam steps (cosine lr from {opts.get('lr', 'the recipe')})"
    return text + "."


def _train_time(r: dict) -> str:
    text = f"{r['train_s'] / 60:.1f} min"
    if r.get("init_train_s"):
        text += f" + {r['init_train_s'] / 60:.1f} min FP32"
    return text


def section(rows: dict) -> str:
    fp = rows.get("fp32")
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    any_row = next(iter(rows.values()))
    command = (
        f"python experiments/detect_results.py --steps {any_row['steps']} --ablation {any_row['ablation']}"
    )
    if fp:
        command = f"python experiments/detect_results.py --steps {fp['steps']} --ablation {fp['ablation']}"
        q = {m: f"{rows[m]['ablation']}:{rows[m]['steps']}" for m in ("quant", "spquant") if m in rows}
        if len(set(q.values())) == 1 and next(iter(q.values())) != f"{fp['ablation']}:{fp['steps']}":
            command += f" --quantized {next(iter(q.values()))}"
        elif len(set(q.values())) > 1:
            command += " --quantized " + ",".join(f"{m}={v}" for m, v in q.items())
    names = {"fp32": "FP32 SNN", "quant": "Quant-SNN", "spquant": "SpQuant-SNN"}
    lines = [
        START,
        "## Detection: spiking YOLO on moving-digits events",
        "",
        f"Generated by `{command}` from `runs/detect-results/*.json` "
        "(no number typed by hand). Recipe `detect-moving-digits`: "
        f"{any_row['train_samples']:,} training / {any_row['test_samples']} test samples, seed {any_row['seed']}, "
        f"{any_row['threads']} torch thread, on a shared 2-core machine (wall times are that machine's, under load "
        "from other jobs). How each row was trained (entries of `experiments/detect_ablations.py`):",
        "",
    ]
    for mode in MODES:
        if mode in rows:
            lines.append(f"* {names[mode]}: {_how_trained(rows[mode])}")
    lines += [
        "",
        "| row | mAP@0.5 (VOC) | mAP@[.5:.95] (COCO) | class-agnostic mAP@0.5 | class accuracy at the responsible slot "
        "| memory MB (packed / paper's 2-bit) | memory reduction (packed) | FLOPs reduction (dense / kept MACs) "
        "| effective-op reduction (SOPs) | authors' convention | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in MODES:
        r = rows.get(mode)
        if r is None:
            continue
        st, me = r["cost"]["static"], r["cost"]["measured"]
        red = fp["cost"]["static"]["total_mb_fp32"] / st["total_mb_packed"] if fp else None
        lines.append(
            f"| {names[mode]} | {r['mAP50']:.3f} | {r['mAP50_95']:.3f} | {r['mAP50_agnostic']:.3f} | "
            f"{100 * r['slot_class_acc']:.1f} % | {st['total_mb_packed']:.4f} / {st['total_mb']:.4f} | {f(red, '.2f')}x | "
            f"{me['flops_reduction']:.2f}x | {me['effective_reduction']:.2f}x | "
            f"{f(me.get('paper_convention_reduction'), '.2f')}{'x' if me.get('paper_convention_reduction') else ''} | "
            f"{_train_time(r)} |"
        )
        if "integer" in r:
            it = r["integer"]
            lines.append(
                f"| {names[mode]}, integer interpreter (`.spq`, {it['file']['file_bytes']:,} bytes) | {it['mAP50']:.3f} | "
                f"{it['mAP50_95']:.3f} | | | (packed in file) | | | | | {it['interpreter_s']:.0f} s inference |"
            )
    lines.append("")
    for mode in MODES:
        r = rows.get(mode)
        if r is None or "integer" not in r:
            continue
        it = r["integer"]
        ops = it["reference_ops_per_sample"]
        lines.append(
            f"* {names[mode]}: integer outputs identical to deploy-simulation on {it['bit_exact_samples']} of "
            f"{it['compared_samples']} test samples; interpreter mAP@0.5 {it['mAP50']:.4f} / COCO {it['mAP50_95']:.4f} vs "
            f"deploy-simulation {it['sim_mAP50']:.4f} / {it['sim_mAP50_95']:.4f}; fake-quant model {r['mAP50']:.4f} / "
            f"{r['mAP50_95']:.4f}. Reference path per sample (16 samples): {ops['dense_macs']:,.0f} dense MACs, "
            f"{ops['kept_macs']:,.0f} kept MACs, {ops['sops']:,.0f} SOPs."
        )
    abl = ROOT / "runs" / "detect-ablations" / "results.jsonl"
    if abl.is_file():
        recs = [json.loads(line) for line in abl.read_text().splitlines() if line.strip()]
        lines += [
            "",
            "### Ablations: what holds class-aware mAP back (seed 0)",
            "",
            "From `runs/detect-ablations/results.jsonl` (`python experiments/detect_ablations.py NAME --steps N`). "
            "*Slot class accuracy*: the arg-max class at the responsible (cell, anchor) slot of every test / "
            "training box, i.e. whether the head classifies, independent of objectness and NMS (chance 10 %). "
            "Recipe keys as recorded: the first runs used the separate detector trainer, whose `loss.*` keys are "
            "today's `detect.*`. *Recipe change* is the whole change from the recipe before these ablations "
            "(4x4 grid, 3,000 training samples, `detect.class_radius` 0): every row ran against that recipe or "
            "spells out the shipped recipe's new values; grid and sample count as the run recorded them (- where "
            "it did not). Wall time at 1 torch thread on the shared machine.",
            "",
            "| ablation | recipe change | mode | grid / training samples | steps | mAP@0.5 | class-agnostic mAP@0.5 "
            "| slot class accuracy test / train | wall time |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in recs:
            change = (
                ", ".join([f"`{o}`" for o in r["overrides"]] + [f"`{k}={v}`" for k, v in r["opts"].items()])
                or "none"
            )
            grid = f"{r['grid'][0]}x{r['grid'][1]} / {r['train_samples']:,}" if "grid" in r else "-"
            lines.append(
                f"| {r['name']} | {change} | {r['mode']} | {grid} | {r['steps']} | {r['mAP50']:.3f} | "
                f"{r['mAP50_agnostic']:.3f} | "
                f"{100 * r['slot_class_acc']:.1f} % / {100 * r['train_slot_class_acc']:.1f} % | {_train_time(r)} |"
            )
        lines.append("")
    lines += [
        "* Memory: `spquant.cost.static_cost` for one sample and one step (MB = 10^6 bytes); reduction = FP32 SNN "
        "total / packed total. FLOPs reduction, effective-op reduction and the authors' convention (for comparison "
        "with the paper only): `spquant.cost.measure_cost` on 256 test samples (docs/method.md, the accountings).",
        "",
        "![detections of the integer model](docs/img/detections_integer.png)",
        "",
        END,
    ]
    return "\n".join(lines)


def write(rows: dict) -> None:
    """The generated block into RESULTS.md (appended when it has none) and docs/detection.md (between
    its markers, image paths relative to docs/)."""
    block = section(rows)
    for path, image_prefix in ((ROOT / "RESULTS.md", "docs/img/"), (ROOT / "docs" / "detection.md", "img/")):
        text = path.read_text() if path.is_file() else ""
        if path.name == "RESULTS.md" or (START in text and END in text):
            write_marked(path, [block.replace("](docs/img/", f"]({image_prefix}")], START, END)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--ablation", default="base", help="recipe overrides of this experiments/detect_ablations.py entry"
    )
    ap.add_argument(
        "--quantized",
        default=None,
        metavar="ENTRY:STEPS",
        help="train the Quant and SpQuant rows as this entry for STEPS instead (e.g. fine-tuned from FP32); "
        "per mode: quant=ENTRY:STEPS,spquant=ENTRY:STEPS",
    )
    ap.add_argument("--write-only", action="store_true")
    ap.add_argument(
        "--recost", action="store_true", help="recompute memory and operation counts from the saved weights"
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    OUT.mkdir(parents=True, exist_ok=True)
    if not a.write_only:
        for mode in a.modes.split(","):
            ablation, steps = a.ablation, a.steps
            if a.quantized and mode != "fp32":
                per_mode = dict(p.split("=") for p in a.quantized.split(",")) if "=" in a.quantized else {}
                spec = per_mode.get(mode, a.quantized)
                ablation, steps = spec.split(":")[0], int(spec.split(":")[1])
            run_mode(mode, steps, a.seed, ablation)
    rows = {m: json.loads((OUT / f"{m}.json").read_text()) for m in MODES if (OUT / f"{m}.json").is_file()}
    if a.recost:  # the accountings again from the saved weights (e.g. after spquant.cost gained one)
        for mode, row in rows.items():
            cfg = load_config(f"{RECIPE}:{mode}", row["overrides"] + [f"train.seed={row['seed']}"])
            model = cfg.build_model()
            model.load_state_dict(torch.load(OUT / f"{mode}.pt", weights_only=True))
            row["cost"] = _cost(model.eval(), load_split(cfg, "test").dataset, cfg)
            (OUT / f"{mode}.json").write_text(json.dumps(row, indent=1))
    if any("integer" in r for r in rows.values()):
        picture(rows)
    write(rows)
    print(section(rows))


if __name__ == "__main__":
    main()
