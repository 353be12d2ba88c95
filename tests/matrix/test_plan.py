"""Presets, precedence of settings and the checks on them (an unknown setting gets a guess)."""

from __future__ import annotations

import pytest

from peft_arena import api
from peft_arena.common.errors import UserError
from peft_arena.matrix.plan import parse_value, unknown_setting_message
from peft_arena.strategies import load_strategies


def _one(**kwargs):
    cells = api.plan_cells(**{"tasks": ["banking77"], "strategies": ["lora"], **kwargs})
    assert len(cells) == 1
    return cells[0]


def test_quick_preset_is_the_default_and_covers_the_matrix():
    cells = api.plan_cells()
    assert {c.task for c in cells} == {"imdb", "agnews", "banking77"}
    assert {c.strategy for c in cells} == {"full", "lora", "qlora", "ia3", "adalora"}
    assert all(c.model == "minilm" for c in cells)


def test_strategy_defaults_then_preset_then_flags_then_set():
    cell = _one()
    assert cell.learning_rate == pytest.approx(3e-3)  # LoRA's own default
    assert cell.peft["r"] == 8
    assert cell.max_length == 64  # the task's own
    cell = _one(flags={"epochs": 5}, sets=["learning_rate=1e-3", "lora.r=16", "lora.lora_alpha=32"])
    assert (cell.epochs, cell.learning_rate, cell.peft["r"], cell.peft["lora_alpha"]) == (
        5, pytest.approx(1e-3), 16, 32)


def test_ia3_gets_a_far_higher_learning_rate_than_full():
    cells = {c.strategy: c for c in api.plan_cells(tasks=["banking77"],
                                                   strategies=["full", "ia3"])}
    assert cells["ia3"].learning_rate >= 10 * cells["full"].learning_rate


def test_bare_peft_key_applies_only_where_it_exists():
    cells = {c.strategy: c for c in api.plan_cells(tasks=["imdb"], strategies=["full", "lora"],
                                                   sets=["r=4"])}
    assert cells["lora"].peft["r"] == 4
    assert cells["full"].peft == {}


@pytest.mark.parametrize("sets, message", [
    (["lora.rank=4"], "Unknown setting lora.rank|Unknown setting 'rank'"),
    (["bogus=1"], "Unknown setting 'bogus'"),
    (["lora.r=0"], "rank must be an integer >= 1"),
    (["learning_rate=-1e-3"], "learning_rate must be > 0"),
    (["learning_rate=0"], "learning_rate must be > 0"),
    (["lorra.r=4"], "Did you mean 'lora'"),
    (["noequals"], "KEY=VALUE"),
])
def test_bad_settings_fail_in_one_line(sets, message):
    with pytest.raises(UserError, match=message) as info:
        _one(sets=sets)
    assert "\n" not in str(info.value)


def test_unknown_task_and_empty_matrix():
    with pytest.raises(UserError, match="Did you mean 'imdb'"):
        api.plan_cells(tasks=["imbd"], strategies=["lora"])
    with pytest.raises(UserError, match="empty"):
        api.plan_cells(tasks=[], strategies=["lora"])


def test_numbers_parse_as_numbers():
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("16") == 16
    assert parse_value("[query, value]") == ["query", "value"]
    assert parse_value("null") is None


def test_preset_file_and_bad_yaml(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("model: minilm\ntasks: [agnews]\nstrategies:\n  lora: {learning_rate: 2e-3}\n")
    cells = api.plan_cells(preset=str(good))
    assert [(c.task, c.strategy, c.learning_rate) for c in cells] == [("agnews", "lora", 2e-3)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [agnews\n")
    with pytest.raises(UserError, match="not valid YAML"):
        api.plan_cells(preset=str(bad))


def test_seeds_make_cells_and_share_a_config_hash():
    cells = api.plan_cells(tasks=["agnews"], strategies=["ia3"], seeds=[0, 1, 2])
    assert [c.seed for c in cells] == [0, 1, 2]
    assert len({c.config_hash() for c in cells}) == 1
    assert len({c.cell_id for c in cells}) == 3


def test_names_cannot_escape_the_results_folder(tmp_path):
    task = tmp_path / "evil.yaml"
    task.write_text("name: ../../etc\ntrain_file: a.csv\ntest_file: b.csv\n")
    with pytest.raises(UserError, match="Bad name"):
        api.plan_cells(tasks=[str(task)], strategies=["lora"])


# --- unknown settings -------------------------------------------------------------------------


@pytest.mark.parametrize("sets, guess", [
    (["rank=4"], "r"), (["lora.rank=4"], "r"), (["lr=1e-3"], "learning_rate"),
    (["learning_rte=1e-3"], "learning_rate"), (["lora.alpha=8"], "lora_alpha"),
])
def test_unknown_setting_suggests_the_likely_one(sets, guess):
    with pytest.raises(UserError, match=f"Did you mean '{guess}'") as info:
        api.plan_cells(tasks=["imdb"], strategies=["lora"], sets=sets)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "for lora: r, lora_alpha, lora_dropout, target_modules" in message
    assert "megatron_config" not in message  # not every field of LoraConfig


def test_unknown_setting_without_a_likely_one():
    message = unknown_setting_message("bogus", "--set", [load_strategies().get("full")])
    assert "Did you mean" not in message and "Common settings: learning_rate" in message


def test_compile_is_set_from_a_preset_or_set_and_named_in_the_hash_only_when_set(tmp_path):
    default = _one()
    assert default.compile == "auto"
    # YAML reads a bare `on` as true: both spellings mean the same setting.
    assert _one(sets=["compile=on"]).compile == "on"
    preset = tmp_path / "compiled.yaml"
    preset.write_text("model: minilm\ntasks: [banking77]\ndefaults: {compile: on}\n"
                      "strategies:\n  lora: {}\n")
    [from_preset] = api.plan_cells(preset=str(preset))
    assert from_preset.compile == "on"
    assert from_preset.config_hash() != default.config_hash()
    assert _one(sets=["compile=off"]).config_hash() not in (default.config_hash(),
                                                           from_preset.config_hash())
    with pytest.raises(UserError, match="compile must be one of off, on, auto"):
        _one(sets=["compile=fast"])
