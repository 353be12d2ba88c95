"""docs/methods.md states every strategy's default learning rate as methods.yaml sets it, says
where that default comes from, and gives its accuracy on the short cell of the committed
all-methods run as that run recorded it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_arena.strategies import load_strategies

PAGE = Path(__file__).resolve().parents[2] / "docs" / "methods.md"
DEFAULTS_HEADING = "## Defaults and where they come from"
RUN = PAGE.parents[1] / "results" / "all-methods" / "records"
SHORT_CELL = "AG News short cell (seed 0 / 1)"


def defaults_table() -> dict[str, dict[str, str]]:
    """The rows of the defaults table, by strategy name, each as {column header: cell}."""
    lines = PAGE.read_text().splitlines()
    start = lines.index(DEFAULTS_HEADING)
    table = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, _rule, *rows = table
    return {row[0].strip("`"): dict(zip(header, row, strict=True)) for row in rows}


def test_every_strategy_has_a_row_with_its_default_rate_and_its_source():
    rows = defaults_table()
    registry = load_strategies()
    assert set(rows) == set(registry.names())
    for name in registry.names():
        row = rows[name]
        stated = float(row["learning rate"])
        assert stated == pytest.approx(registry.get(name).train_defaults["learning_rate"]), name
        assert row["where the rate comes from"], f"{name}: say where its default comes from"


def recorded_accuracies() -> dict[str, dict[int, float]]:
    """Test accuracy of each strategy's cells in the committed all-methods run, by seed."""
    found: dict[str, dict[int, float]] = {}
    configs: dict[str, set[str]] = {}
    for path in sorted(RUN.glob("*.json")):
        record = json.loads(path.read_text())
        spec = record["spec"]
        configs.setdefault(spec["strategy"], set()).add(record["cell_id"].rsplit("__", 1)[1])
        found.setdefault(spec["strategy"], {})[spec["seed"]] = record["metrics"]["accuracy"]
    doubled = {name: ids for name, ids in configs.items() if len(ids) > 1}
    assert not doubled, f"one default per strategy in {RUN}: {doubled}"
    return found


def test_the_short_cell_column_is_the_committed_run():
    recorded = recorded_accuracies()
    for name, row in defaults_table().items():
        cell = row[SHORT_CELL]
        if name not in recorded:  # a strategy that does not apply to MiniLM
            assert cell == "-", f"{name}: no record in {RUN}, so no figure"
            continue
        stated = [float(value) for value in cell.split("/")]
        assert stated == [round(recorded[name][seed], 3) for seed in (0, 1)], name
