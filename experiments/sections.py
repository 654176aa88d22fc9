"""Generated sections of markdown files: each experiment owns the text between its own markers
(``<!-- name:start -->`` ... ``<!-- name:end -->``) and rewrites only that."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spquant.fileio import atomic_write  # noqa: E402


def write_marked(path: Path, lines: list[str], start: str, end: str) -> None:
    """Replace the text from ``start`` to ``end`` of ``path`` by ``lines`` (which carry the markers),
    or append it when the file has no such section; nothing else changes. Written atomically."""
    text = "\n".join(lines)
    old = path.read_text() if path.is_file() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    atomic_write(path, new.encode())
