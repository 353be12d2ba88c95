"""Running a matrix (matrix.execute): which cells run, which are skipped, busy or over the
parameter budget, the events a caller sees, the checks made before any cell starts, and one
cell run through its own process to its record."""

from __future__ import annotations

import dataclasses
import os

import pytest

from peft_arena import api
from peft_arena.common.errors import UserError
from peft_arena.matrix.execute import cell_lock, new_run_id, run_matrix
from peft_arena.records import store
from peft_arena.records.schema import SCHEMA_VERSION


@pytest.fixture
def cells(tiny_bert, synth_task) -> list:
    return api.plan_cells(tasks=[str(synth_task)], strategies=["lora", "ia3"],
                          model=str(tiny_bert), sets=["batch_size=16"],
                          flags={"epochs": 1, "max_train_samples": 30, "max_eval_samples": 30})


def _write(results, spec, status: str = "ok") -> None:
    record = {"schema_version": SCHEMA_VERSION, "cell_id": spec.cell_id, "status": status,
              "spec": spec.to_dict(), "metrics": {"accuracy": 0.5},
              "error": None if status == "ok" else {"type": "OutOfMemoryError",
                                                    "message": "out of memory",
                                                    "phase": "train", "traceback": None}}
    store.write_record(store.record_path(results, spec.cell_id), record)


def _files(results) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.records_dir(results).glob("*.json")}


def _run(cells, results, **kwargs):
    events: list[tuple[str, int, int, str]] = []
    result = run_matrix(cells, results, on_event=lambda kind, i, n, outcome: events.append(
        (kind, i, n, outcome.status)), **kwargs)
    return result, events


def test_recorded_cells_are_skipped_and_each_gets_its_events(cells, tmp_path) -> None:
    for spec in cells:
        _write(tmp_path, spec)
    before = _files(tmp_path)
    result, events = _run(cells, tmp_path)
    assert [o.status for o in result.outcomes] == ["skipped", "skipped"]
    assert events == [("start", 1, 2, "running"), ("end", 1, 2, "skipped"),
                      ("start", 2, 2, "running"), ("end", 2, 2, "skipped")]
    assert (result.planned, result.failed, result.not_reached) == (2, 0, 0)
    assert result.other_hardware == {}  # the records name no machine
    assert _files(tmp_path) == before  # nothing ran, nothing was rewritten


def test_a_failed_record_is_skipped_and_still_counts_as_failed(cells, tmp_path) -> None:
    _write(tmp_path, cells[0], "failed")
    _write(tmp_path, cells[1])
    result, _ = _run(cells, tmp_path)
    assert [o.status for o in result.outcomes] == ["skipped", "skipped"]
    assert (result.failed, result.skipped_failed) == (1, 1)  # --retry-failed would run it


def test_the_same_cell_named_twice_is_planned_once(cells, tmp_path) -> None:
    _write(tmp_path, cells[0])
    result, events = _run([cells[0], cells[0]], tmp_path)
    assert result.planned == 1 and len(result.outcomes) == 1
    assert [e[2] for e in events] == [1, 1]


def test_a_cell_another_run_holds_is_busy_and_left_alone(cells, tmp_path) -> None:
    _write(tmp_path, cells[1])
    with cell_lock(tmp_path, cells[0].cell_id) as held:
        assert held is not None
        result, _ = _run(cells, tmp_path)
    assert [(o.status, o.message) for o in result.outcomes] == [
        ("busy", "another run is running this cell"), ("skipped", "already recorded")]
    assert not store.record_path(tmp_path, cells[0].cell_id).exists()


def test_a_lock_is_held_by_one_holder_at_a_time(tmp_path) -> None:
    with cell_lock(tmp_path, "cell") as first, cell_lock(tmp_path, "cell") as second:
        assert first is not None and second is None
    with cell_lock(tmp_path, "cell") as again:
        assert again is not None  # released on leaving the block


def test_cells_over_the_parameter_budget_are_counted_and_never_run(cells, tmp_path) -> None:
    result, events = _run(cells, tmp_path, max_trainable_params=1)
    assert [o.status for o in result.outcomes] == ["over_budget", "over_budget"]
    assert all(o.message.endswith("trainable parameters > budget 1")
               for o in result.outcomes)
    assert [e[3] for e in events if e[0] == "end"] == ["over_budget", "over_budget"]
    assert _files(tmp_path) == {}


def test_an_empty_matrix_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="The matrix is empty"):
        run_matrix([], tmp_path)


def test_bad_data_fails_the_run_before_any_cell_starts(cells, tmp_path) -> None:
    task = tmp_path / "broken.yaml"
    task.write_text("name: broken\ntrain_file: missing.jsonl\ntest_file: missing.jsonl\n")
    broken = [dataclasses.replace(spec, task="broken", task_file=str(task)) for spec in cells]
    with pytest.raises(UserError) as info:
        run_matrix(broken, tmp_path / "results")
    assert "\n" not in str(info.value)
    assert not store.records_dir(tmp_path / "results").exists() \
        or _files(tmp_path / "results") == {}


def test_batch_sizes_must_split_over_the_devices_of_a_cell(cells, tmp_path) -> None:
    uneven = [dataclasses.replace(cells[0], devices_per_cell=2, batch_size=15)]
    with pytest.raises(UserError, match="batch_size=15 does not split over devices_per_cell=2"):
        run_matrix(uneven, tmp_path)


def test_each_run_has_an_id_of_its_own() -> None:
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(run_id.startswith(f"{os.getpid()}-") for run_id in ids)


@pytest.mark.slow  # a cell process that imports torch and trains: 15-35 s on 2 busy cores
def test_a_cell_runs_in_its_own_process_and_its_record_names_the_run(cells, tmp_path) -> None:
    [spec] = [dataclasses.replace(cells[0], max_train_samples=16, max_eval_samples=8,
                                  measure_retention=False)]
    result, events = _run([spec], tmp_path)
    [outcome] = result.outcomes
    assert outcome.status == "ok", outcome.message
    assert [e[3] for e in events] == ["running", "ok"]
    record = store.read_record(store.record_path(tmp_path, spec.cell_id))
    assert record["run_id"] == result.run_id and record["cell_id"] == spec.cell_id
    assert record["execution"]["attempts"] == 1
    assert record["execution"]["worker"]
    assert outcome.record["metrics"]["accuracy"] == record["metrics"]["accuracy"]
    assert not list(store.records_dir(tmp_path).glob(f".*{store.TEMP_SUFFIX}"))
