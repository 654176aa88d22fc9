"""The repository stands alone: code and docs cite docs/method.md, not a specification outside the
repository, and carry no issue-tracker numbers."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "a SPEC section (cite docs/method.md#...)": re.compile(r"SPEC\s*§"),
    "a link to the SPEC outside the repository": re.compile(r"shared/SPEC"),
    "an issue-tracker number": re.compile(r"\bissue\s*#?\d+", re.IGNORECASE),
}
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg"}


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts]
    this = Path(__file__).resolve()
    return [p for p in files if p.suffix in SUFFIXES and p.is_file() and p.resolve() != this]


def test_method_page_exists_with_the_cited_anchors():
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", method, re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    cited = set()
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        cited |= set(re.findall(r"method\.md#([a-z0-9-]+)", text))
    assert cited, "nothing cites docs/method.md"
    assert cited <= anchors, f"citations of missing sections: {sorted(cited - anchors)}"


def test_no_outside_spec_citations_or_issue_numbers():
    found = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for what, pattern in FORBIDDEN.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}: {m.group(0)!r}")
    assert not found, "\n".join(found)
