"""Every code block in README.md and docs/*.md runs.

* ``python`` blocks of one page run in order in one namespace (like a notebook), in a fresh folder.
* ``bash`` / ``sh`` blocks: each command runs in the same folder. ``spquant ...`` runs this
  checkout's CLI in-process (``spquant.cli.main``); ``spquant train`` gets ``--set train.max_steps=2`` and 128 / 64 train / test samples
  (``data.train_subset`` / ``data.test_subset``), ``spquant run`` ``--limit 64``, so a
  documented training command costs seconds (``spquant demo``: 2 steps, 50 test images); commands whose output the page feeds to later ones
  (run folders, ``.spq`` files) are created by the earlier commands themselves.
* Set-up commands (creating the virtual environment, ``pip install``, ``bash scripts/*.sh``,
  ``apt-get``, ``torchrun``) are what CI itself runs; they are reported as skipped, not run.
* A block preceded by ``<!-- doc-test: skip REASON -->`` is skipped with that reason (for blocks
  that need the full data sets or a GPU); a ``toml``/``text``/``json`` block is data, not code.
* A hidden ``<!-- doc-test: setup ... -->`` comment right before a python block is run first (it
  makes the objects the example assumes, e.g. a small trained ``model``), so the page shows only
  the example while the test runs it whole.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s+(.+?)\s*-->")
SETUP = re.compile(r"<!--\s*doc-test:\s*setup\s*\n(.*?)-->\s*$", re.S)
RUN_BY_CI = (
    "python3.11 -m venv",
    "pip ",
    ".venv/bin/pip",
    "bash scripts/",
    "apt-get",
    "torchrun",
    "LD_PRELOAD",
)
# a documented training command costs seconds: 2 steps, small data (config keys of the schema)
TINY_TRAIN = ["--set", "train.max_steps=2", "--set", "data.train_subset=128", "--set", "data.test_subset=64"]
TINY_RUN = ["--limit", "64"]
TINY_DEMO = ["--max-steps", "2", "--test-subset", "50", "--no-progress"]


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None
    setup: str = ""


def blocks(page: Path) -> list[Block]:
    out, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            start, lang = i, m.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            s = SKIP.search(prev)
            setup = SETUP.search("\n".join(lines[max(0, start - 40) : start]))
            code = "\n".join(lines[start + 1 : j])
            out.append(
                Block(page, start + 1, lang, code, s.group(1) if s else None, setup.group(1) if setup else "")
            )
            i = j + 1
        else:
            i += 1
    return out


def commands(code: str) -> list[list[str]]:
    """Shell lines -> argument lists (comments stripped, continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        if line.startswith(RUN_BY_CI) or line.split()[0] in ("cd",):
            out.append(["#ci", line])
            continue
        out.append(shlex.split(line, comments=True))
    return out


def _run_spquant(args: list[str]) -> tuple[int, str]:
    """This checkout's CLI, in-process (no interpreter start-up per command)."""
    import contextlib
    import io

    import torch

    from spquant.cli import main

    if args[:1] == ["train"] or args[:2] == ["detect", "train"]:
        args = [*args, *TINY_TRAIN]
    elif args[:1] == ["demo"]:
        args = [*args, *TINY_DEMO]
    elif args[:1] == ["run"] and "--limit" not in args:
        args = [*args, *TINY_RUN]
    threads, out = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                rc = main(args)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        torch.set_num_threads(threads)
    return rc, out.getvalue()


def _run_shell(argv: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    if argv[0] == "spquant":
        return _run_spquant(argv[1:])
    if argv[0] in ("python", "python3", ".venv/bin/python"):
        argv = [sys.executable, *argv[1:]]
        argv = [a if not a.startswith(("benchmarks/", "experiments/")) else str(ROOT / a) for a in argv]
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return res.returncode, res.stdout + res.stderr


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


CODE_LANGS = {"python", "bash", "sh", "console"}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples_run(page, tmp_path, monkeypatch):
    todo = [b for b in blocks(page) if b.lang in CODE_LANGS]
    if not todo:
        pytest.skip(f"{_page_id(page)} has no code blocks")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", SPQUANT_THREADS="1")
    env.setdefault("SPQUANT_DATA", str(tmp_path / "data"))
    env.setdefault("SPQUANT_CACHE", str(tmp_path / "cache"))
    for key in ("SPQUANT_DATA", "SPQUANT_THREADS", "SPQUANT_CACHE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for b in todo:
        where = f"{_page_id(page)}:{b.line}"
        if b.skip:
            continue
        if b.lang == "python":
            try:
                if b.setup:
                    exec(compile(b.setup, where + " (setup)", "exec"), namespace)  # noqa: S102
                exec(compile(b.code, where, "exec"), namespace)  # noqa: S102 - our own docs
            except Exception as e:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{where}: python block raised {type(e).__name__}: {e}")
            ran += 1
            continue
        for argv in commands(b.code):
            if argv[0] == "#ci":
                continue
            rc, output = _run_shell(argv, tmp_path, env)
            if rc != 0:
                pytest.fail(f"{where}: `{shlex.join(argv)}` exited {rc}\n{output[-3000:]}")
            ran += 1
    assert (
        ran > 0
        or all(b.skip for b in todo)
        or all(c[0] == "#ci" for b in todo if b.lang != "python" for c in commands(b.code))
    ), f"{_page_id(page)}: nothing ran"


def test_block_parser_and_skip_marker(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n<!-- doc-test: skip needs the full CIFAR10-DVS -->\n"
        "```bash\nspquant train --config x  # comment\n```\n```toml\n[a]\n```\n"
        "<!-- doc-test: setup\nmodel = 1\n-->\n```python\nprint(model)\n```\n"
    )
    got = blocks(page)
    assert [(b.lang, b.line, b.skip) for b in got] == [
        ("python", 2, None),
        ("bash", 6, "needs the full CIFAR10-DVS"),
        ("toml", 9, None),
        ("python", 15, None),
    ]
    assert got[-1].setup == "model = 1\n" and got[0].setup == ""
    assert commands("spquant a \\\n  --b 1   # why\n# only a comment\npip install x\n") == [
        ["spquant", "a", "--b", "1"],
        ["#ci", "pip install x"],
    ]


DOTTED = re.compile(r"`(spquant(?:\.[A-Za-z_]\w*)+)")
SUBCOMMAND = re.compile(r"(?<![\w./-])(?<!from )(?<!import )spquant ([a-z][\w-]*)(?: ([a-z][\w-]*))?")
MODULE_RUN = re.compile(r"python -m (spquant(?:\.\w+)*)")


def _resolves(name: str) -> bool:
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_names_exist(page):
    """What a page names exists: ``spquant.x.y`` objects, ``spquant CMD [ACTION]`` commands and
    ``python -m spquant.mod`` entry points; and no page points into a development-only folder."""
    import importlib.util

    from spquant.cli import build_parser

    text = page.read_text(encoding="utf-8")
    bad = [n for n in sorted(set(m.group(1).rstrip(".") for m in DOTTED.finditer(text))) if not _resolves(n)]
    commands_ = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public view
    code = "\n".join([b.code for b in blocks(page)] + re.findall(r"`([^`\n]+)`", text))
    for m in SUBCOMMAND.finditer(code):
        cmd, action = m.group(1), m.group(2)
        if cmd not in commands_:
            bad.append(f"spquant {cmd}")
            continue
        sub = commands_[cmd]._subparsers  # noqa: SLF001
        if sub is not None and action is not None and action not in sub._group_actions[0].choices:  # noqa: SLF001
            bad.append(f"spquant {cmd} {action}")
    for m in MODULE_RUN.finditer(code):
        spec = importlib.util.find_spec(m.group(1))
        if spec is None or (
            spec.submodule_search_locations and importlib.util.find_spec(m.group(1) + ".__main__") is None
        ):
            bad.append(f"python -m {m.group(1)}")
    if "../shared" in text:
        bad.append("a path into ../shared")
    assert not bad, f"{_page_id(page)} names what does not exist: {sorted(set(bad))}"
