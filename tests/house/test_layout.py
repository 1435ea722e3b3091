"""The house's arrows, read from the source (every import, function-level ones included): `methods` never
imports the harness; the harness's packages import each other without a circle and never upwards; no
module imports another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> packages it must never import (directly or through a function-level import)
FORBIDDEN = {
    "methods": {"harness"},
    "harness.results": {"harness.sweep", "harness.cli", "harness.train", "harness.bench", "harness.analysis"},
    "harness.analysis": {"harness.sweep", "harness.cli", "harness.bench"},
    "harness.bench": {"harness.cli"},
    "harness.train": {"harness.sweep", "harness.cli", "harness.results", "harness.bench", "harness.analysis"},
    "harness.config": {"harness.sweep", "harness.cli", "harness.train", "harness.results", "harness.bench"},
    "harness.data": {"harness.config", "harness.train", "harness.sweep", "harness.cli", "harness.results"},
    "harness.models": {"harness.config", "harness.train", "harness.sweep", "harness.cli", "harness.results"},
    "harness.sweep": {"harness.cli", "harness.bench", "harness.analysis"},
}
# the floor: import only each other's lower members (errors, then io and metrics, then progress and folders)
LEAVES = ("harness.io", "harness.errors", "harness.metrics", "harness.progress", "harness.folders")
FLOOR = {"harness.io", "harness.errors", "harness.metrics"}


def package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "methods":
        return "methods"
    if parts[0] != "harness":
        return None
    return "harness" if len(parts) == 1 else f"harness.{parts[1]}"


def imports() -> list[tuple[str, str, str, list[str]]]:
    """(importing module, its file, imported module, names imported) for every import of harness/ and methods/."""
    out = []
    for path in sorted([*(ROOT / "harness").rglob("*.py"), *(ROOT / "methods").rglob("*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out += [(module, str(path), a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:  # relative: from the module's own package
                    base = module.split(".") if is_init else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                out.append((module, str(path), target, [a.name for a in node.names]))
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, _path, target, names in imports():
        src = package(module)
        for name in [target, *(f"{target}.{n}" for n in names)]:
            dst = package(name)
            if src and dst and dst != src and not (name != target and package(target) == dst == src):
                edges.setdefault(src, set()).add(dst)
    return edges


def fail_on_circle(edges: dict[str, set[str]], *, allowed=lambda node, nxt: False) -> None:
    """Depth-first over `edges`: the first circle found fails the test, named module by module."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1 and not allowed(node, nxt):
                pytest.fail("import circle: " + " -> ".join([*trail, node, nxt]))
            if not state.get(nxt):
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [])


def test_the_packages_import_each_other_without_a_circle():
    fail_on_circle(graph())


@pytest.mark.parametrize("src", sorted(FORBIDDEN))
def test_no_arrow_points_up(src):
    edges = graph()
    bad = {d for d in edges.get(src, ()) if any(d == f or d.startswith(f + ".") for f in FORBIDDEN[src])}
    assert not bad, f"{src} imports {sorted(bad)}"


def test_the_leaves_import_only_the_floor():
    edges = graph()
    for leaf in LEAVES:
        assert edges.get(leaf, set()) <= FLOOR - {leaf}, (leaf, edges.get(leaf))
    assert not edges.get("harness.metrics"), "the metric vocabulary imports nothing of the harness"
    # the output targets' rule sits on the folder objects, so that every command may use it
    assert edges.get("harness.outputs", set()) <= FLOOR | {"harness.folders"}, edges.get("harness.outputs")


def test_no_two_modules_import_each_other():
    """Module by module, function-level imports included: a circle inside a package is one too (a module that
    imports its own package's __init__, which imports it, is Python's package idiom, not a circle)."""
    known = {module for module, _path, _target, _names in imports()}
    edges: dict[str, set[str]] = {}
    for module, _path, target, names in imports():
        for name in [target, *(f"{target}.{n}" for n in names)]:
            if name in known and name != module:
                edges.setdefault(module, set()).add(name)
    # a module importing its own package's __init__ (which imports it) is Python's package idiom
    fail_on_circle(edges, allowed=lambda node, nxt: node.startswith(nxt + "."))
