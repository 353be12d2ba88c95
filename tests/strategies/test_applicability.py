"""Which strategies apply to which family: `list --json`, `--strategies all`, and the one-line
refusal of a method that does not apply."""

from __future__ import annotations

import json
import sys

import pytest

from peft_arena import api
from peft_arena.cli import main
from peft_arena.common.errors import UserError
from peft_arena.strategies import load_strategies
from peft_arena.strategies.applicability import NOT_STRATEGIES, family_of


def peft_arena(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The command line in this process (a fresh interpreter costs seconds of imports)."""
    monkeypatch.setattr(sys, "argv", ["peft-arena", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def listed(monkeypatch, capsys) -> dict:
    code, out, err = peft_arena(monkeypatch, capsys, "list", "--json")
    assert code == 0, err
    return json.loads(out)


def test_list_json_names_strategies_with_families_tasks_and_presets(listed):
    encoders = [s["name"] for s in listed["strategies"] if "encoder" in s["families"]]
    assert len(encoders) >= 45
    assert {"dora", "pissa", "eva", "corda", "loftq", "lora_plus", "lora_fa", "vblora",
            "c3a", "road", "waveft", "shira"} <= set(encoders)
    assert {t["name"] for t in listed["tasks"]} >= {"agnews", "banking77", "imdb"}
    assert "quick" in listed["presets"]
    reasons = {(d["name"], tuple(d["families"])): d["reason"] for d in listed["does_not_apply"]}
    assert ("adaption_prompt", ("encoder",)) in reasons
    assert all(reason for reason in reasons.values())
    assert {name for name, families in reasons if not families} == set(NOT_STRATEGIES)


def test_list_table_gives_the_reasons(monkeypatch, capsys):
    code, out, _ = peft_arena(monkeypatch, capsys, "list")
    assert code == 0
    assert "methods that do not apply" in out
    assert "task id per example" in out


def test_families_of_model_types():
    assert [family_of(t) for t in ("bert", "roberta", "distilbert", "llama", "qwen2", "gpt2")] \
        == ["encoder"] * 3 + ["decoder"] * 3


def test_all_is_every_strategy_that_applies_to_the_model(tiny_bert, tiny_llama):
    def planned(model):
        cells = api.plan_cells(tasks=["agnews"], strategies=["all"], model=str(model),
                               seeds=[0])
        return {c.strategy for c in cells}

    registered = set(load_strategies().names())
    assert planned(tiny_bert) == registered - {"adaption_prompt"}
    assert planned(tiny_llama) == registered - {"ln_tuning"}


def test_a_named_strategy_that_does_not_apply_is_refused(tiny_bert):
    with pytest.raises(UserError, match=r"'adaption_prompt' does not apply to .*encoder"):
        api.plan_cells(tasks=["agnews"], strategies=["adaption_prompt"], model=str(tiny_bert))
    with pytest.raises(UserError, match="'poly' does not apply to sequence classification"):
        api.plan_cells(tasks=["agnews"], strategies=["lora", "poly"], model=str(tiny_bert))


def test_the_command_line_refuses_with_one_line_and_exit_2(tiny_bert, tmp_path, monkeypatch,
                                                          capsys):
    code, _, err = peft_arena(monkeypatch, capsys, "run", "--matrix", "agnews", "--strategies",
                              "adaption_prompt", "--model", tiny_bert, "--dry-run",
                              "--results", tmp_path)
    assert code == 2
    [line] = err.strip().splitlines()
    assert "Llama-family attention" in line


def test_the_methods_page_has_a_row_for_every_strategy():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    missing = [n for n in load_strategies().names() if f"| `{n}` |" not in page]
    assert not missing, f"add a row to docs/methods.md for {missing}"
