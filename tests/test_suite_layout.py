"""The suite's own layout: tests/<package>/test_<topic>.py, helpers only in tests/support/, and
no test file used as a helper library (fixtures come through conftest.py, never imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"
# The only test files at the root: the package's layering and the suite's own layout.
ROOT_FILES = {"__init__.py", "conftest.py", "test_layers.py", "test_suite_layout.py"}


def _imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, at the top or inside a function; a relative
    import is written with its leading dots, `from tests import x` as tests.x."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if module in ("tests", "tests.support") or node.level:
                # The names may be modules themselves: `from tests import conftest`.
                dot = "" if module.endswith(".") else "."
                found += [(node.lineno, f"{module}{dot}{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _borrowed(source: str) -> list[tuple[int, str]]:
    """Imports in `source` that take names from the suite outside tests/support/."""
    wrong = []
    for line, module in _imported_modules(source):
        parts = module.split(".")
        from_suite = module.startswith(".") or parts[0] == "tests"
        helper = module == "tests.support" or module.startswith("tests.support.")
        if (from_suite and not helper) or "conftest" in parts:
            wrong.append((line, module))
    return wrong


def test_no_test_file_imports_another_test_file_or_conftest() -> None:
    wrong = [f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
             for path in sorted(TESTS.rglob("*.py"))
             for line, module in _borrowed(path.read_text(encoding="utf-8"))]
    assert wrong == [], ("shared helpers belong in tests/support/, fixtures in conftest.py "
                         "(used by name, never imported):\n" + "\n".join(wrong))


@pytest.mark.parametrize("source", [
    "from tests.report.test_report import make_record",
    "from tests.conftest import KEYWORDS",
    "import conftest",
    "from tests import conftest",
    "from . import test_data",
    "from .test_data import rows",
    "import tests.matrix.test_plan",
    "def f():\n    from tests.matrix import test_plan",
])
def test_the_check_sees_each_way_of_borrowing(source: str) -> None:
    assert _borrowed(source), source


def test_the_check_lets_helpers_and_libraries_through() -> None:
    source = ("import pytest\nfrom tests.support.records import make_record\n"
              "from tests.support import faults\nfrom peft_arena.records import store\n")
    assert _borrowed(source) == []


def test_support_modules_are_not_tests() -> None:
    tests_in_support = [str(p.relative_to(TESTS)) for p in SUPPORT.rglob("test_*.py")]
    assert tests_in_support == []


def test_each_test_file_sits_in_a_package_folder() -> None:
    misplaced = []
    for path in TESTS.rglob("test_*.py"):
        folder = path.parent
        if folder == TESTS:
            if path.name not in ROOT_FILES:
                misplaced.append(f"{path.name}: at the root; it belongs in tests/<package>/")
        elif not (folder / "__init__.py").is_file():
            misplaced.append(f"{path.relative_to(TESTS)}: its folder has no __init__.py")
    assert misplaced == [], "\n".join(misplaced)
