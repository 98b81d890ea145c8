"""The import rules of the repository, checked on the source (every import, including those
inside functions):

* the runtime ``kwsstream`` stands alone: it never imports ``eval`` or ``export``;
* nothing imports from ``tests``;
* no import cycles between the project's modules;
* torch and transformers are never imported by the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kwsstream", "eval", "export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)  # "from . import x" may be a module
    return found


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + list((ROOT / "scripts").glob("*.py"))
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in imports(path) if m in modules and m != name}
    return graph


def test_the_runtime_imports_neither_eval_nor_export_nor_torch():
    for path in (ROOT / "kwsstream").rglob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[0] in ("eval", "export", "torch", "transformers", "tests")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_nothing_imports_tests():
    for pkg in (*PACKAGES, "scripts"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = {m for m in imports(path) if m.split(".")[0] in ("tests", "conftest", "pulse_helpers")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles():
    graph = project_graph()
    # a package's __init__ importing its own submodules is not a cycle of stages: drop those edges
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_what_it_claims():
    """A relative import resolves to its module; a made-up cycle is found, a chain is not."""
    assert module_name(ROOT / "kwsstream" / "encoders" / "base.py") == "kwsstream.encoders.base"
    assert "kwsstream.errors" in imports(ROOT / "kwsstream" / "encoders" / "__init__.py")
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
