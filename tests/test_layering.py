"""The package is layered along the data flow; no module imports a layer above its own.

The order, lowest first (docs/architecture.md explains what each layer owns)::

    data < quant < neuron < layers < prune < models < cost < detect < train < deploy < report < cli

A layer may import itself and anything below it. Every ``cli`` / ``__main__`` module (the command
line of any package) and the public facade ``spquant/__init__.py`` form the top layer. Imports are
read from the source with ``ast``, including the ones inside functions, so a lazy import cannot hide
an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spquant"

LAYERS = [
    "data",
    "quant",
    "neuron",
    "layers",
    "prune",
    "models",
    "cost",
    "detect",
    "train",
    "deploy",
    "report",
    "cli",
]

# module prefix -> layer; the longest matching prefix wins
OWNER = {
    "spquant.errors": "data",  # the project's error classes: importable from every layer
    "spquant.fileio": "data",  # atomic writes: importable from every layer
    "spquant.data": "data",
    "spquant.quant": "quant",
    "spquant.neuron": "neuron",
    "spquant.perf": "neuron",  # run-time knobs of the fused neuron kernel
    "spquant.layers": "layers",
    "spquant.prune": "prune",
    "spquant.models": "models",
    "spquant.cost": "cost",
    "spquant.detect": "detect",
    "spquant.train": "train",
    "spquant.deploy": "deploy",
    "spquant.report": "report",
    "spquant.cli": "cli",
    "spquant.__main__": "cli",
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def layer_of(module: str) -> str:
    if module == "spquant" or module.rsplit(".", 1)[-1] in ("cli", "__main__"):
        return "cli"
    best = max((p for p in OWNER if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to OWNER in {__file__}")
    return OWNER[best]


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The spquant modules ``module`` imports (anywhere in its source)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    targets.append(sub)
                elif base == "spquant" and alias.name == "__version__":
                    continue  # the version string: importing the package root is no dependency
                else:
                    targets.append(base)
        for target in targets:
            if target == "spquant" or target.startswith("spquant."):
                resolved = _resolve(target)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def upward_imports() -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for module, targets in graph().items():
        for target in sorted(targets):
            if rank[layer_of(target)] > rank[layer_of(module)]:
                bad.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    return sorted(bad)


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for module in MODULES:
        assert layer_of(module) in LAYERS


def test_no_module_imports_a_layer_above_it():
    assert upward_imports() == []


def test_no_import_cycles():
    assert cycles() == []


def test_the_checker_sees_upward_and_lazy_imports(tmp_path):
    """The walk must catch an import inside a function body (the way the old cycle hid)."""
    fake = tmp_path / "spquant" / "cost"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "x.py").write_text("def f():\n    from spquant.train import loop\n")
    (tmp_path / "spquant" / "__init__.py").write_text("")
    train = tmp_path / "spquant" / "train"
    train.mkdir()
    (train / "__init__.py").write_text("")
    (train / "loop.py").write_text("from ..cost import x\n")
    global MODULES, PACKAGE, ROOT
    saved = MODULES, PACKAGE, ROOT
    try:
        ROOT, PACKAGE = tmp_path, tmp_path / "spquant"
        MODULES = module_names()
        assert upward_imports() == ["spquant.cost.x (cost) imports spquant.train.loop (train)"]
        assert cycles() == [["spquant.cost.x", "spquant.train.loop"]]
    finally:
        MODULES, PACKAGE, ROOT = saved


if __name__ == "__main__":  # print the faults: python tests/test_layering.py
    print("\n".join(upward_imports()) or "no upward imports")
    print("\n".join(" <-> ".join(c) for c in cycles()) or "no cycles")
