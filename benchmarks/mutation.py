"""Mutation testing of the core modules with mutmut (not part of the test suite: far too slow).

For each module, a fresh copy of the repository is made in a temporary folder, mutmut mutates only
that module and runs only the tests that exercise it, and the counts are printed as a table:

    python benchmarks/mutation.py                    # every core module
    python benchmarks/mutation.py quant neuron       # some of them
    python benchmarks/mutation.py --jobs 2 --keep    # parallel children; keep the copies to inspect
    python benchmarks/mutation.py cost --files spquant/cost/hooks.py spquant/cost/static.py
    python benchmarks/mutation.py prune --sample 400 --seed 0 --keep   # a seeded random sample
    python benchmarks/mutation.py cost --resume /tmp/mutation-cost-XXXX  # re-test its survivors

``--resume`` takes a copy kept by an earlier run, adds this checkout's new test files to it (and
replaces those named by ``--update-tests``; the mutated source stays as it was) and re-tests only
the mutants that survived there (or were never tested, or no test reached): a killed mutant stays
killed when tests are only added, so the result is the score the new tests would get on a fresh run
of the same mutants, in a fraction of the time.

Score = killed / (killed + survived), with timeouts counted as killed (the mutant made a test run
forever, which is a detected change) and mutants no test reaches reported separately. Surviving
mutants are listed; inspect one with ``mutmut show NAME`` inside the kept copy. Many survivors are
equivalent mutants (a changed error message, a default argument no caller relies on): judge each
before adding a test.

Needs ``pip install mutmut`` (3.x).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import random
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
        [
            "tests/test_neuron.py",
            "tests/test_fused.py",
            "tests/test_surrogate_oracles.py",
            "tests/test_neuron_edges.py",
            "tests/test_neuron_protocol.py",
            "tests/test_fused_kernels.py",
            "tests/test_fused_prior.py",
            "tests/test_backend_default.py",
            "tests/test_fused_mutants.py",
            "tests/test_gpu_check.py",
        ],
    ),
    "prune": (
        ["spquant/prune"],
        [
            "tests/test_prune.py",
            "tests/test_prune_budget.py",
            "tests/test_gate_overhead_oracle.py",
            "tests/test_prune_oracles.py",
        ],
    ),
    "cost": (
        ["spquant/cost"],
        [
            "tests/test_cost.py",
            "tests/test_cost_accountings.py",
            "tests/test_cost_hooks.py",
            "tests/test_cost_summary.py",
        ],
    ),
    "deploy-fold": (
        ["spquant/deploy/fold.py"],
        [
            "tests/deploy/test_fold_oracle.py",
            "tests/deploy/test_refusals.py",
            "tests/deploy/test_parity.py",
            "tests/deploy/test_fold_mutants.py",
        ],
    ),
    "deploy-interpreter": (
        ["spquant/deploy/interpreter.py"],
        [
            "tests/deploy/test_exhaustive.py",
            "tests/deploy/test_parity.py",
            "tests/deploy/test_event_input_parity.py",
            "tests/deploy/test_skipping.py",
            "tests/deploy/test_format.py",
            "tests/deploy/test_detect_export.py",
            "tests/test_learned_quant.py",
            "tests/deploy/test_interpreter_oracles.py",
        ],
    ),
    "readers": (
        ["spquant/data/readers"],
        [
            "tests/data/test_readers.py",
            "tests/data/test_aedat2_bytes.py",
            "tests/data/test_prophesee.py",
            "tests/data/test_conventions.py",
            "tests/data/test_doctests.py",
            "tests/data/test_datasets.py",
            "tests/data/test_prepare.py",
            "tests/detect/test_detection_data.py",
            "tests/hostile/test_regressions.py",
            "tests/data/test_reader_faults.py",
        ],
    ),
}


NO_TESTS = (33, 5, 34)  # mutmut's exit codes for a mutant that no selected test reaches


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, capture_output=True, text=True)


def _exit_codes(work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in glob.glob(str(work / "mutants" / "**" / "*.py.meta"), recursive=True):
        codes.update(json.loads(Path(meta).read_text())["exit_code_by_key"])
    return codes


def _in_files(key: str, files: list[str] | None) -> bool:
    """Whether mutant ``key`` (e.g. spquant.cost.hooks.x_f__mutmut_3) lies in one of ``files``."""
    if not files:
        return True
    return any(key.startswith(f.removesuffix(".py").replace("/", ".") + ".") for f in files)


def _selection_fingerprint(tests: list[str]) -> str:
    # mutmut 3 hashes its test selection this way; a changed list would reset every cached verdict
    return hashlib.sha256(repr(tuple(tests)).encode()).hexdigest()[:12]


def _refresh_tests(work: Path, tests: list[str], update: list[str]) -> None:
    """Copy this checkout's new test files (and those named in ``update``) into a kept copy and let
    mutmut keep its verdicts for the new test list. Test files the copy already has stay as they are:
    they match its (older) source, which this checkout's versions may have outgrown."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (work / f).exists() and f not in update:
            continue
        for dest in (work / f, work / "mutants" / f):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest)
    # tests that import benchmarks/ (fuzz seeds, gpu_check) were skipped in copies made before
    # benchmarks/ joined also_copy
    for f in subprocess.run(
        ["git", "ls-files", "benchmarks"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split():
        dest = work / "mutants" / f
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest)
    py = work / "pyproject.toml"
    text = py.read_text()
    old = json.loads(text.split("tests_dir = ", 1)[1].splitlines()[0])
    py.write_text(text.replace(f"tests_dir = {json.dumps(old)}", f"tests_dir = {json.dumps(tests)}"))
    stats_path = work / "mutants" / "mutmut-stats.json"
    stats = json.loads(stats_path.read_text())
    fp = stats.get("config_fingerprint", {})
    if fp.get("test_selection") == _selection_fingerprint(old):
        fp["test_selection"] = _selection_fingerprint(tests)
        stats_path.write_text(json.dumps(stats))


def run_module(
    name: str,
    jobs: int,
    keep: bool,
    files: list[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    resume: Path | None = None,
    score_only: bool = False,
    update_tests: list[str] | None = None,
) -> dict:
    paths, tests = CORE[name]
    if files:
        outside = [f for f in files if not any(f == p or f.startswith(p.rstrip("/") + "/") for p in paths)]
        if outside:
            return {"module": name, "error": f"{outside} are not part of {paths}"}
        paths = files
    children = ["--max-children", str(jobs)]
    if resume is not None:
        work = resume
        tests = [t for t in tests if (ROOT / t).exists()]
        if not score_only:
            _refresh_tests(work, tests, update_tests or [])
        chosen_file = work / "mutation-sample.json"
        chosen = set(json.loads(chosen_file.read_text())) if chosen_file.exists() else None
        codes = {k: v for k, v in _exit_codes(work).items() if _in_files(k, files)}
        before = {k for k, v in codes.items() if v == 0}
        rerun = sorted(  # survivors, mutants never tested, and those no test reached (new tests may)
            k
            for k, v in codes.items()
            if (v in (0, None) or v in NO_TESTS) and (chosen is None or k in chosen)
        )
        if rerun and not score_only:
            _mutmut(work, "run", *children, *rerun)
    else:
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
                'also_copy = ["spquant", "tests", "benchmarks"]\n'  # some tests import benchmarks/
            )
        chosen = None
        before = None
        if sample:
            _mutmut(work, "run", *children, "no-mutant-has-this-name")  # only generates mutants and stats
            names = sorted(_exit_codes(work))
            chosen = set(random.Random(seed).sample(names, min(sample, len(names))))
            (work / "mutation-sample.json").write_text(json.dumps(sorted(chosen)))
            _mutmut(work, "run", *children, *sorted(chosen))
        else:
            _mutmut(work, "run", *children)
    codes = {k: v for k, v in _exit_codes(work).items() if _in_files(k, files)}
    if chosen is not None:
        codes = {k: v for k, v in codes.items() if k in chosen}
    status = {"killed": 0, "survived": 0, "no_tests": 0, "not_run": 0}
    for v in codes.values():
        if v == 0:
            status["survived"] += 1
        elif v is None:
            status["not_run"] += 1
        elif v in NO_TESTS:
            status["no_tests"] += 1
        else:  # failed tests, timeouts (SIGXCPU), crashes: the change was detected
            status["killed"] += 1
    survivors = sorted(k for k, v in codes.items() if v == 0)
    if not keep and resume is None:
        shutil.rmtree(work, ignore_errors=True)
    judged = status["killed"] + status["survived"]
    return {
        "module": name,
        "total": len(codes),
        **status,
        "score": status["killed"] / judged if judged else float("nan"),
        "survivors": survivors,
        "killed_now": sorted(before - set(survivors)) if before is not None else None,
        "copy": str(work) if keep or resume is not None else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", default=list(CORE), help=f"some of {list(CORE)}")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies (to run mutmut show)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--files", nargs="+", help="mutate only these files of the (single) module")
    ap.add_argument("--sample", type=int, help="test a seeded random sample of this many mutants")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    ap.add_argument("--resume", type=Path, help="kept copy of one module: re-test its survivors")
    ap.add_argument("--score-only", action="store_true", help="with --resume: only count its verdicts")
    ap.add_argument(
        "--update-tests",
        nargs="+",
        default=[],
        help="with --resume: test files the copy already has that are replaced by this checkout's",
    )
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in CORE]
    if unknown:
        ap.error(f"unknown modules {unknown}; choose from {list(CORE)}")
    if (args.files or args.resume) and len(args.modules) != 1:
        ap.error("--files and --resume need exactly one module")
    rows = [
        run_module(
            m,
            args.jobs,
            args.keep,
            args.files,
            args.sample,
            args.seed,
            args.resume,
            args.score_only,
            args.update_tests,
        )
        for m in args.modules
    ]
    print("| module | mutants | killed | survived | no test | not run | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['module']} | {r['error']} | | | | | |")
            continue
        print(
            f"| {r['module']} | {r['total']} | {r['killed']} | {r['survived']} | {r['no_tests']} "
            f"| {r['not_run']} | {r['score']:.1%} |"
        )
    for r in rows:
        for s in r.get("survivors", []):
            print(f"survived: {s}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
