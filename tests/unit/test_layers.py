"""The layer rules no import-linter contract expresses (the rest: [tool.importlinter]).

A "package" is each of domain, messaging, workers, and each direct child of conveyor (a
subpackage such as conveyor.readmodels, or a module such as conveyor.settings): the units
of the layers contract in pyproject.toml.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from functools import cache

import grimp

ROOTS = ("conveyor", "messaging", "workers", "domain")


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOTS, include_external_packages=True)


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "conveyor" and len(parts) > 1 else parts[0]


def package_imports(graph: grimp.ImportGraph) -> dict[str, dict[str, tuple[str, str]]]:
    """package → imported package → one module-level import that makes the arrow."""
    arrows: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for module in graph.modules:
        if module.split(".")[0] not in ROOTS:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] not in ROOTS:
                continue
            source, target = _package_of(module), _package_of(imported)
            if source != target:
                arrows[source].setdefault(target, (module, imported))
    return arrows


def find_cycles(arrows: dict[str, dict[str, tuple[str, str]]]) -> list[list[str]]:
    """Each strongly connected group of more than one package (Tarjan), as one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(package: str) -> None:
        index[package] = low[package] = len(index)
        stack.append(package)
        on_stack.add(package)
        for target in arrows.get(package, {}):
            if target not in index:
                visit(target)
                low[package] = min(low[package], low[target])
            elif target in on_stack:
                low[package] = min(low[package], index[target])
        if low[package] == index[package]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == package:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for package in sorted(arrows):
        if package not in index:
            visit(package)
    return groups


def _describe(group: list[str], arrows: dict[str, dict[str, tuple[str, str]]]) -> str:
    lines = [" <-> ".join(group)]
    for source in group:
        for target in group:
            if target in arrows.get(source, {}):
                module, imported = arrows[source][target]
                lines.append(f"    {source} -> {target}: {module} imports {imported}")
    return "\n".join(lines)


def test_no_import_cycle_between_packages() -> None:
    arrows = package_imports(_graph())
    cycles = find_cycles(arrows)
    assert not cycles, "package-level import cycles:\n" + "\n".join(
        _describe(group, arrows) for group in cycles
    )


def test_the_cycle_finder_names_a_cycle() -> None:
    arrows = {
        "conveyor.gateway": {"conveyor.readmodels": ("conveyor.gateway.relay", "x")},
        "conveyor.readmodels": {"conveyor.gateway": ("conveyor.readmodels.rebuild", "y")},
        "domain": {},
    }
    assert find_cycles(arrows) == [["conveyor.gateway", "conveyor.readmodels"]]


def test_domain_imports_only_the_standard_library() -> None:
    graph = _graph()
    outside = sorted(
        f"{module} imports {imported}"
        for module in graph.find_descendants("domain") | {"domain"}
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] != "domain"
        and imported.split(".")[0] not in sys.stdlib_module_names
    )
    assert not outside, "domain/ must be pure:\n" + "\n".join(outside)
