"""No import cycle among flame's modules, and each package imports only the layers below it:
every import statement counts, at module level or inside a function (an import hidden in a
function is still a dependency, and a cycle through one breaks as soon as someone moves it to
the top)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "trainers", "analysis", "jobs", "conf")
# What each package may import besides itself (docs/design.md, "Layering"): sweep is the bottom
# (the family, the arithmetic, the sweep directory's contract); conf (every group's schema, the
# typed whole config) and jobs (executors, ledger, CLI) sit on top of everything.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "sweep": frozenset(),
    "trainers": frozenset({"sweep"}),
    "analysis": frozenset({"sweep", "trainers"}),
    "conf": frozenset(PACKAGES),
    "jobs": frozenset(PACKAGES),
}


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = project_modules()
    assert "jobs.cli" in modules and "trainers.embedded.train" in modules
    assert "sweep.schema" in imports_of("sweep.config", modules["sweep.config"], modules)


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``module -> imported module`` for each import that ``MAY_IMPORT`` does not allow."""
    found = []
    for name, targets in graph.items():
        package = name.split(".")[0]
        found += [f"{name} -> {target}" for target in targets
                  if target.split(".")[0] not in MAY_IMPORT[package] | {package}]
    return sorted(found)


def test_the_walker_sees_an_upward_import_inside_a_function(tmp_path) -> None:
    assert upward_imports({"sweep.a": {"jobs.b", "sweep.c"}, "jobs.b": {"sweep.a", "conf.x"},
                           "analysis.d": {"trainers.e", "conf.x"}}) == \
        ["analysis.d -> conf.x", "sweep.a -> jobs.b"]
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from jobs import ledger\n    import conf.schema\n")
    modules = project_modules()
    assert imports_of("sweep.late", source, modules) == {"jobs.ledger", "conf.schema"}


def test_each_package_imports_only_the_layers_below_it() -> None:
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert upward_imports(graph) == []
