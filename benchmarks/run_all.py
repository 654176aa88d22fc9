"""Run every ``benchmarks/bench_*.py`` (each in its own subprocess, so memory numbers are clean),
print one table and write ``benchmarks/results.json``.

Convention: each ``bench_*.py`` has ``main()`` returning ``{row name: row}`` where a row is a dict
``{"value", "unit", "goal", "met", "note"}`` (see ``_common.row``; a bare number is accepted too).
A benchmark that fails is reported as failed and the others still run.

    python benchmarks/run_all.py [--only neuron,memory] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

_CHILD = (
    "import json, sys; sys.path.insert(0, {here!r}); sys.path.insert(0, {root!r}); "
    "import {mod} as b; r = b.main(); print('@@RESULT@@' + json.dumps(r, default=str))"
)


def discover() -> list[str]:
    return sorted(
        os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(HERE, "bench_*.py"))
    )


def run_one(mod: str, timeout: float) -> dict:
    code = _CHILD.format(here=HERE, root=os.path.dirname(HERE), mod=mod)
    t0 = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timeout after {timeout:.0f} s", "seconds": time.time() - t0}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"rc={proc.returncode}"])[-1]
        return {"status": "failed", "error": tail, "seconds": time.time() - t0}
    rows = json.loads(lines[-1][len("@@RESULT@@") :])
    rows = {
        k: (v if isinstance(v, dict) else {"value": v, "unit": "", "goal": None, "met": None, "note": ""})
        for k, v in rows.items()
    }
    return {"status": "ok", "rows": rows, "seconds": time.time() - t0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated names, e.g. neuron,memory")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = p.parse_args(argv)
    mods = discover()
    if args.only:
        wanted = {f"bench_{n.removeprefix('bench_')}" for n in args.only.split(",")}
        mods = [m for m in mods if m in wanted]
    import torch

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "benchmarks": {},
    }
    for mod in mods:
        print(f"running {mod} ...", flush=True)
        results["benchmarks"][mod] = run_one(mod, args.timeout)
    print()
    print(f"{'benchmark':18s} {'row':62s} {'value':>10s} {'goal':>8s}  status")
    for mod, r in results["benchmarks"].items():
        if r["status"] != "ok":
            print(f"{mod:18s} {'FAILED: ' + r['error'][:80]}")
            continue
        for name, v in r["rows"].items():
            met = "" if v.get("met") is None else ("met" if v["met"] else "MISSED")
            print(
                f"{mod:18s} {name[:62]:62s} {v.get('value')!s:>10s} {v.get('goal') or '':>8s}  {met} {v.get('note') or ''}"
            )
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
