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
