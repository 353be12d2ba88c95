"""The package's layers: no import runs upward, and the report side never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "peft_arena"

# Lowest first; a module may import its own package and any lower layer, never a higher one
# or a sibling on its own level.
LAYERS = [
    {"common"},
    {"config"},
    {"data"},
    {"records", "measure"},
    {"model"},
    {"strategies"},
    {"generation"},
    {"train"},
    {"cell"},
    {"matrix", "report"},
    {"tools"},
    {"api"},
    {"cli"},
    {"__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """peft_arena.cell.runner -> cell; peft_arena.cli -> cli."""
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> set[str]:
    """Every peft_arena module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name.startswith("peft_arena.")}


def test_every_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert parts <= set(RANK), f"give {sorted(parts - set(RANK))} a layer in LAYERS"


def test_no_import_runs_upward_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in _imports(path):
            part = _part(module)
            if part in RANK and part != own and RANK[part] >= RANK[own]:
                wrong.append(f"{relative} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_report_side_never_loads_torch():
    modules = sorted(f"peft_arena.{'.'.join(p.relative_to(PACKAGE).with_suffix('').parts)}"
                     for folder in ("report", "records") for p in (PACKAGE / folder).glob("*.py"))
    code = "\n".join([*(f"import {m.removesuffix('.__init__')}" for m in modules),
                      "import sys",
                      "print('torch' in sys.modules, 'transformers' in sys.modules)"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"], (modules, done.stdout)
    assert "peft_arena.report.build" in modules and "peft_arena.records.store" in modules


def _module_name(path: Path) -> str:
    parts = ("peft_arena", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported_modules(path: Path) -> dict[str, set[str]]:
    """The peft_arena modules a file imports (anywhere in it), each with the names it takes:
    `from a.b import c` is module a.b.c when that is a module, else names {c} of a.b."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    found.setdefault(f"{node.module}.{alias.name}", set())
                else:
                    found.setdefault(node.module, set()).add(alias.name)
    return {name: names for name, names in found.items() if name in MODULES}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
    return groups


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(g for g in _strongly_connected(graph) if len(g) > 1) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    graph = {name: set(_imported_modules(path)) - {name} for name, path in MODULES.items()}
    cycles = [group for group in _strongly_connected(graph) if len(group) > 1]
    assert not cycles, "modules that import each other:\n" + "\n".join(
        " <-> ".join(group) for group in cycles)


def _package_of(module: str) -> str:
    """peft_arena.cell.runner -> peft_arena.cell; a package's __init__ is its own package."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_no_module_takes_a_private_name_from_another_package():
    wrong = []
    for name, path in MODULES.items():
        for module, names in _imported_modules(path).items():
            private = sorted(n for n in names if n.startswith("_"))
            if module.rpartition(".")[2].startswith("_") and not module.endswith("__init__"):
                private.append(module)
            if private and _package_of(module) != _package_of(name):
                wrong.append(f"{name} imports {', '.join(private)} from {module}")
    assert not wrong, "\n".join(wrong)


MAX_MODULES, MAX_LINES = 14, 2500


def test_no_package_is_too_big_to_find_ones_way_in():
    packages = [p for p in [PACKAGE, *PACKAGE.rglob("*")] if (p / "__init__.py").exists()]
    wrong = []
    for package in packages:
        modules = [p for p in package.glob("*.py") if p.name != "__init__.py"]
        lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in modules)
        if len(modules) > MAX_MODULES or lines > MAX_LINES:
            wrong.append(f"{package.relative_to(PACKAGE.parent)}: {len(modules)} modules, "
                         f"{lines} lines (at most {MAX_MODULES} and {MAX_LINES})")
    assert not wrong, "\n".join(wrong)


# The CLI parses, shows progress and prints; everything else it asks of the library API.
CLI_MAY_IMPORT = {"peft_arena.api", "peft_arena.common.errors", "peft_arena.common.progress",
                  "peft_arena.common.library_logs"}


def test_the_cli_imports_only_the_api_and_the_shared_helpers():
    wrong = [f"{name} imports {module}"
             for name, path in MODULES.items() if name.startswith("peft_arena.cli")
             for module in _imported_modules(path)
             if module not in CLI_MAY_IMPORT and not module.startswith("peft_arena.cli")
             and module != "peft_arena"]
    assert not wrong, "\n".join(wrong)
    assert any("peft_arena.api" in _imported_modules(path)
               for name, path in MODULES.items() if name.startswith("peft_arena.cli"))
