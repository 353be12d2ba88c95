"""Presets with several models (`models:`), each with its own strategies and settings."""

from __future__ import annotations

import pytest

from peft_arena.common.errors import UserError
from peft_arena.config.presets import load_preset
from peft_arena.matrix.plan import Overrides, build_cells

PRESET = """
defaults: {epochs: 1, batch_size: 16}
tasks: {agnews: {max_train_samples: 800}}
strategies: {lora: {r: 4}}
models:
  minilm:
    strategies: {full: {}, lora: {}, ia3: {learning_rate: 2.0e-2}}
  smollm2:
    defaults: {batch_size: 8}
    strategies: {lora: {learning_rate: 1.0e-3}, ia3: {}}
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(PRESET)
    return load_preset(str(path))


def _cells(preset, strategies=None, model=None, sets=()):
    return build_cells(preset, ["agnews"], strategies or preset.strategies, [0],
                       Overrides(sets=list(sets)), model=model)


def test_each_model_runs_its_own_strategies_and_settings(preset):
    assert preset.strategies == ["lora", "full", "ia3"]
    cells = {(c.model, c.strategy): c for c in _cells(preset)}
    assert sorted(cells) == [("minilm", "full"), ("minilm", "ia3"), ("minilm", "lora"),
                             ("smollm2", "ia3"), ("smollm2", "lora")]
    assert cells["minilm", "ia3"].learning_rate == 2.0e-2
    assert cells["smollm2", "lora"].learning_rate == 1.0e-3
    assert cells["minilm", "lora"].learning_rate == 3.0e-3  # the strategy's own default
    assert cells["smollm2", "lora"].batch_size == 8 and cells["minilm", "lora"].batch_size == 16
    assert cells["smollm2", "lora"].peft["r"] == 4  # top-level strategies: every model
    assert all(c.max_train_samples == 800 for c in cells.values())


def test_strategies_from_the_command_line_filter_each_model(preset):
    assert {(c.model, c.strategy) for c in _cells(preset, ["full"])} == {("minilm", "full")}
    # A strategy no model lists runs on every model.
    assert {c.model for c in _cells(preset, ["qlora"])} == {"minilm", "smollm2"}


def test_model_flag_overrides_the_models(preset, tiny_llama):
    cells = _cells(preset, ["lora"], model=str(tiny_llama))
    assert [(c.model, c.learning_rate) for c in cells] == [(str(tiny_llama), 3.0e-3)]
    # Naming one of the preset's models keeps its section.
    assert [c.learning_rate for c in _cells(preset, ["lora"], model="smollm2")] == [1.0e-3]


def test_command_line_sets_still_win(preset):
    cells = _cells(preset, sets=["learning_rate=5e-4"])
    assert {c.learning_rate for c in cells} == {5e-4}


@pytest.mark.parametrize("text, message", [
    ("model: minilm\nmodels: {smollm2: {}}\n", "either 'model' or 'models'"),
    ("models: {smollm2: {strategy: {}}}\n", "unknown key"),
])
def test_bad_model_sections_are_one_line_errors(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_preset(str(path))


def test_the_decoders_preset_plans_both_models():
    preset = load_preset("decoders")
    cells = build_cells(preset, preset.tasks, preset.strategies, preset.seeds, Overrides())
    models = {c.model for c in cells}
    assert models == {"minilm", "smollm2"}
    assert {c.task for c in cells} == {"imdb", "agnews", "banking77"}


def test_the_dry_run_tables_name_the_model_when_a_preset_has_several(preset):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from peft_arena.cli import _plan_table

    def rendered(cells) -> list[str]:
        counts = [SimpleNamespace(trainable=1, total=2, trainable_pct=50.0) for _ in cells]
        console = Console(width=400, record=True, file=io.StringIO())
        console.print(_plan_table(cells, counts))
        return console.export_text().splitlines()

    rows = [line for line in rendered(_cells(preset, ["lora"])) if "lora" in line]
    assert len(rows) == 2
    assert [("minilm" in row, "smollm2" in row) for row in rows] == [(True, False),
                                                                      (False, True)]
    header = next(line for line in rendered(_cells(preset, ["lora"])) if "strategy" in line)
    assert "model" in header
    # One model: no model column (the plan reads as before).
    one = rendered(_cells(preset, ["full"]))
    assert not any("model" in line for line in one)
