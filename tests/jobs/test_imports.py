"""jobs/ has no import cycle, counting imports inside functions too (issue 12: a cycle hidden
in a function, like launch <-> status through reconcile, is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def imports_of(path: Path) -> set[str]:
    """The jobs.* modules ``path`` imports anywhere (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "jobs":  # from jobs import ledger, slurm
                found |= {f"jobs.{alias.name}" for alias in node.names}
            elif node.module.startswith("jobs."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jobs.")}
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_jobs_modules_import_no_cycle() -> None:
    graph = {f"jobs.{p.stem}": imports_of(p) for p in JOBS.glob("*.py")}
    assert graph["jobs.status"] >= {"jobs.reconcile", "jobs.launch"}  # the graph is read
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # and a cycle would be found
