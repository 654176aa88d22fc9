"""Mutation testing of the core modules with mutmut (not part of the test suite: far too slow).

For each module, a fresh copy of the repository is made in a temporary folder, mutmut mutates only
that module and runs only the tests that exercise it, and the counts are printed as a table:

    python benchmarks/mutation.py                    # every core module
    python benchmarks/mutation.py quant neuron       # some of them
    python benchmarks/mutation.py --jobs 2 --keep    # parallel children; keep the copies to inspect

Score = killed / (killed + survived), with timeouts counted as killed (the mutant made a test run
forever, which is a detected change) and mutants no test reaches reported separately. Surviving
mutants are listed; inspect one with ``mutmut show NAME`` inside the kept copy. Many survivors are
equivalent mutants (a changed error message, a default argument no caller relies on): judge each
before adding a test.

Needs ``pip install mutmut`` (3.x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (files to mutate, tests that exercise them)
CORE = {
    "quant": (
        ["spquant/quant.py"],
        ["tests/test_quant.py", "tests/test_quant_edges.py", "tests/test_learned_quant.py"],
    ),
    "neuron": (
        ["spquant/neuron"],
        ["tests/test_neuron.py", "tests/test_fused.py", "tests/test_surrogate_oracles.py"],
    ),
    "prune": (
        ["spquant/prune"],
        ["tests/test_prune.py", "tests/test_prune_budget.py", "tests/test_gate_overhead_oracle.py"],
    ),
    "cost": (["spquant/cost"], ["tests/test_cost.py", "tests/test_cost_accountings.py"]),
    "deploy-fold": (
        ["spquant/deploy/fold.py"],
        ["tests/deploy/test_fold_oracle.py", "tests/deploy/test_refusals.py", "tests/deploy/test_parity.py"],
    ),
    "deploy-interpreter": (
        ["spquant/deploy/interpreter.py"],
        [
            "tests/deploy/test_exhaustive.py",
            "tests/deploy/test_parity.py",
            "tests/deploy/test_event_input_parity.py",
            "tests/deploy/test_skipping.py",
        ],
    ),
    "readers": (
        ["spquant/data/readers"],
        ["tests/data/test_readers.py", "tests/data/test_aedat2_bytes.py", "tests/data/test_prophesee.py"],
    ),
}


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def run_module(name: str, jobs: int, keep: bool) -> dict:
    paths, tests = CORE[name]
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    _copy_repo(work)
    existing = [p for p in paths if (work / p).exists()]
    tests = [t for t in tests if (work / t).exists()]
    if not existing or not tests:
        return {"module": name, "error": f"missing {paths if not existing else tests}"}
    with open(work / "pyproject.toml", "a") as f:
        f.write(
            "\n[tool.mutmut]\n"
            f"paths_to_mutate = {json.dumps(existing)}\n"
            f"tests_dir = {json.dumps(tests)}\n"
            'also_copy = ["spquant", "tests"]\n'
        )
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run(mutmut + ["run", "--max-children", str(jobs)], cwd=work, capture_output=True, text=True)
    subprocess.run(mutmut + ["export-cicd-stats"], cwd=work, capture_output=True, text=True)
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    res = subprocess.run(mutmut + ["results"], cwd=work, capture_output=True, text=True).stdout
    survivors = [line.split(":")[0].strip() for line in res.splitlines() if line.strip().endswith("survived")]
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    killed = stats["killed"] + stats["timeout"] + stats.get("segfault", 0)
    judged = killed + stats["survived"]
    return {
        "module": name,
        "total": stats["total"],
        "killed": killed,
        "survived": stats["survived"],
        "no_tests": stats["no_tests"],
        "score": killed / judged if judged else float("nan"),
        "survivors": survivors,
        "copy": str(work) if keep else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", default=list(CORE), help=f"some of {list(CORE)}")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies (to run mutmut show)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in CORE]
    if unknown:
        ap.error(f"unknown modules {unknown}; choose from {list(CORE)}")
    rows = [run_module(m, args.jobs, args.keep) for m in args.modules]
    print("| module | mutants | killed | survived | no test | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['module']} | {r['error']} | | | | |")
            continue
        print(
            f"| {r['module']} | {r['total']} | {r['killed']} | {r['survived']} | {r['no_tests']} | {r['score']:.1%} |"
        )
    for r in rows:
        for s in r.get("survivors", []):
            print(f"survived: {s}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
