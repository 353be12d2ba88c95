"""A strategy's pass before training (PiSSA's SVD, EVA's statistics) is a timed phase of its
own, counted in the cell's total, and only opened for strategies that have one."""

from __future__ import annotations

import pytest

from peft_arena.cell.entry import run_cell
from peft_arena.config.spec import CellSpec


def _run(strategy, tiny_bert, synth_task, data_dir, **peft) -> dict:
    spec = CellSpec(model=str(tiny_bert), task="synth", strategy=strategy,
                    task_file=str(synth_task), epochs=1, batch_size=32,
                    max_train_samples=96, max_eval_samples=32, measure_retention=False,
                    peft=peft)
    return run_cell(spec, data_dir)


@pytest.fixture(scope="module")
def eva_record(tiny_bert, synth_task, data_dir) -> dict:
    return _run("eva", tiny_bert, synth_task, data_dir, init_lora_weights="eva",
                eva_config={"rho": 1.0}, r=8, lora_alpha=16, lora_dropout=0.1)


def test_the_pass_is_its_own_phase_and_in_the_total(eva_record):
    timing = eva_record["time"]
    phases = timing["phases"]
    assert phases["prepare_s"] > 0
    assert sum(phases.values()) == pytest.approx(timing["total_s"], rel=0.05)
    # The adapters were built from the data: EVA's A is no longer PEFT's random start.
    assert eva_record["resolved"]["peft_config"]["init_lora_weights"] == "eva"


@pytest.mark.slow
def test_a_strategy_without_a_pass_has_no_such_phase(tiny_bert, synth_task, data_dir):
    record = _run("lora", tiny_bert, synth_task, data_dir, r=8, lora_alpha=16,
                  lora_dropout=0.1)
    assert "prepare_s" not in record["time"]["phases"]


def test_the_runner_never_asks_for_a_strategy_by_name():
    import inspect

    from peft_arena.cell import runner

    source = inspect.getsource(runner)
    for name in ("pissa", "eva", "corda", "loftq", "lora_plus", "lora_fa"):
        assert f'"{name}"' not in source
