"""The matrix fills the retention figures' base side before its cells start
(matrix.base_side): once per model and task, in none of the cells' times, with its own time
in the run's result and in RESULTS/retention_base.jsonl."""

from __future__ import annotations

import json

import pytest

from peft_arena.matrix.base_side import SIDE_RECORD, BaseSideRun, prepare_base_sides
from peft_arena.matrix.execute import run_matrix
from peft_arena.records.store import iter_records
from tests.support.specs import tiny_spec


def test_cells_without_retention_start_no_process(tiny_bert, tmp_path):
    cells = [tiny_spec(tiny_bert, None, task="agnews", measure_retention=False)]
    run = prepare_base_sides(cells, tmp_path, None)
    assert run.entries == [] and run.error is None and run.summary() is None
    assert not (tmp_path / SIDE_RECORD).exists()


def test_the_summary_line_counts_computed_and_cached_entries():
    run = BaseSideRun(entries=[{"cache_hit": False, "seconds": 2.5},
                               {"cache_hit": True, "seconds": 9.0}], seconds=7.25)
    assert run.summary() == ("retention base side: 1 computed (2.5 s), 1 cached; 7.2 s "
                             "before the cells, in none of their times")
    failed = BaseSideRun(error="ValueError: broken")
    assert "not prepared (ValueError: broken); cells computed it" in failed.summary()


@pytest.mark.slow
def test_the_matrix_computes_the_base_side_once_before_its_cells(
        tiny_bert_body, builtin_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    cells = [tiny_spec(tiny_bert_body, None, strategy, task="agnews")
             for strategy in ("lora", "ia3")]
    result = run_matrix(cells, results, builtin_data)
    assert result.count("ok") == 2
    [entry] = result.base_side.entries
    assert not entry["cache_hit"] and entry["computed_by"] == "matrix"
    assert entry["seconds"] > 0 and result.base_side.seconds >= entry["seconds"]
    for record in iter_records(results):
        kept = record["retention"]
        # Read from the cache the matrix filled: the cell's retention phase holds no base
        # model load or forward pass.
        assert kept["base_cache_hit"]
        assert kept["base"]["computed_by"] == "matrix"
        assert kept["base"]["entry"] == entry["entry"]
        assert kept["base"]["seconds"] == pytest.approx(entry["seconds"])
        assert kept["phases"]["base_s"] < entry["seconds"]
    [line] = (results / SIDE_RECORD).read_text().splitlines()
    assert json.loads(line)["entries"] == result.base_side.entries
    # Another seed later: the entry is there, nothing is computed again.
    again = run_matrix([tiny_spec(tiny_bert_body, None, "lora", task="agnews", seed=1)],
                       results, builtin_data)
    [cached] = again.base_side.entries
    assert cached["cache_hit"] and cached["entry"] == entry["entry"]
    assert "0 computed" in again.base_side.summary()
    assert len((results / SIDE_RECORD).read_text().splitlines()) == 2
