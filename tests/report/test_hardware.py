"""Records from several machines: hardware named by what changes speed; the report and
compare never average or judge times and memory across hardware; compare judges accuracy
with the leaderboard's significance tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_arena.measure.hardware_identity import hardware_identity, machine_here, machine_label
from peft_arena.report import compare as comparing
from peft_arena.report.build import build_report
from tests.support.records import comparison_row, make_record, write, write_folder

XEON = "Intel(R) Xeon(R) Processor"
WITHOUT_AMX = {"cpu": XEON, "cpu_count": 2, "cpu_bf16_flags": ["avx512_bf16"],
               "torch_threads": 2}
WITH_AMX = {"cpu": XEON, "cpu_count": 2, "cpu_bf16_flags": ["avx512_bf16", "amx_bf16"],
            "torch_threads": 2}


def _on(record: dict, hardware: dict, precision: str) -> dict:
    record["environment"] = {**record["environment"], "hardware": hardware,
                             "precision": precision}
    return record


def test_one_model_name_with_and_without_amx_is_two_kinds_of_hardware() -> None:
    plain = _on(make_record("imdb", "lora", 0, 0.8), WITHOUT_AMX, "fp32")
    amx = _on(make_record("imdb", "lora", 0, 0.8), WITH_AMX, "bf16")
    assert hardware_identity(plain) != hardware_identity(amx)
    assert "AMX" in hardware_identity(amx) and "bf16" in hardware_identity(amx)
    more_threads = _on(make_record("imdb", "lora", 0, 0.8), {**WITHOUT_AMX, "torch_threads": 1},
                       "fp32")
    assert hardware_identity(more_threads) != hardware_identity(plain)
    # What the cell wrote itself wins (a cell over two processes says so).
    assert hardware_identity({**plain, "execution": {"hardware": "x"}}) == "x"


def test_report_keeps_costs_of_each_hardware_apart(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for seed, (hardware, precision, slow) in enumerate(
            [(WITHOUT_AMX, "fp32", 1.0), (WITHOUT_AMX, "fp32", 1.0), (WITH_AMX, "bf16", 0.3)]):
        record = _on(make_record("imdb", "lora", seed, 0.8 + 0.01 * seed), hardware, precision)
        record["time"]["phases"]["train_s"] = 100.0 * slow
        write(results, record)
    built = build_report(results)
    lora = built.summary.iloc[0]
    assert lora["n_seeds"] == 3  # accuracy pools all three seeds
    assert lora["accuracy_mean"] == pytest.approx(0.81)
    assert lora["train_s_mean"] == pytest.approx(100.0)  # only the two on one hardware
    assert lora["n_hardware"] == 2 and "AMX" not in lora["hardware"]
    board = (results / "leaderboard.md").read_text()
    assert "compared only within one kind of hardware" in board
    other = next(line for line in board.splitlines() if line.startswith("| ") and "AMX" in line)
    assert "| 30.0 |" in other  # the AMX machine's time, on its own line


def test_compare_refuses_time_verdicts_across_hardware(tmp_path: Path) -> None:
    base = write_folder(tmp_path / "base")
    head = write_folder(tmp_path / "head", {("imdb", "lora"): {"train_factor": 0.5}})
    for path in (head / "records").glob("*.json"):
        from peft_arena.records import store

        record = store.read_record(path)
        store.write_record(path, _on(record, WITH_AMX, "bf16"))
    comparison = comparing.compare(base, head)
    lora = comparison_row(comparison, "imdb", "lora")
    assert lora["other_hardware"] and lora["time_change_kind"] == "same"
    assert lora["outcome"] == "unchanged"  # twice as fast, but on another machine
    assert "not compared" in comparison.notes[0]
    assert "(other hardware)" in comparing.to_markdown(comparison)


def _disagreeing(record: dict, lost: int, gained: int) -> dict:
    """The record with `lost` right answers made wrong and `gained` wrong ones made right."""
    y_true, y_pred = record["predictions"]["y_true"], list(record["predictions"]["y_pred"])
    right = [i for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)) if t == p]
    wrong = [i for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)) if t != p]
    for i in right[:lost]:
        y_pred[i] = (y_true[i] + 1) % 2
    for i in wrong[:gained]:
        y_pred[i] = y_true[i]
    record["predictions"]["y_pred"] = y_pred
    record["metrics"]["accuracy"] = sum(t == p for t, p in zip(y_true, y_pred, strict=True)) \
        / len(y_true)
    return record


def test_compare_judges_a_single_seed_accuracy_drop_by_its_significance(tmp_path: Path
                                                                       ) -> None:
    # One seed each, 200 test examples. 20 answers flipped each way but 4 more lost than
    # gained: a 2-point drop, beyond the 1-point threshold but within a paired bootstrap's
    # noise. 30 lost and none gained: a 15-point drop, far outside it.
    base, head = tmp_path / "base", tmp_path / "head"
    write(base, make_record("imdb", "lora", 0, 0.85))
    write(head, _disagreeing(make_record("imdb", "lora", 0, 0.85), 24, 20))
    small = comparison_row(comparing.compare(base, head), "imdb", "lora")
    assert small["accuracy_change"] == pytest.approx(-0.02)
    assert small["accuracy_change_kind"] == "same" and "bootstrap" in small["accuracy_test"]
    write(head, _disagreeing(make_record("imdb", "lora", 0, 0.85), 30, 0))
    large = comparison_row(comparing.compare(base, head), "imdb", "lora")
    assert large["accuracy_change"] == pytest.approx(-0.15)
    assert large["accuracy_change_kind"] == "worse" and large["outcome"] == "regression"


def _other_than_this_machine() -> dict:
    """This machine's hardware section with its CPU model and core count changed: another
    machine whatever this one is (an AMX Xeon included)."""
    from peft_arena.measure.provenance import hardware

    here = hardware()
    return {**here, "cpu": f"Not {here['cpu']}", "cpu_count": (here["cpu_count"] or 1) + 1}


def test_run_skips_a_cell_recorded_on_other_hardware_and_says_how_to_get_ones_own(
        tmp_path, monkeypatch, capsys, tiny_bert, synth_task) -> None:
    from peft_arena import api
    from peft_arena.records import store
    from tests.support.cli import call_cli

    other = _other_than_this_machine()
    assert machine_label(other) != machine_here()
    results = tmp_path / "results"
    [spec] = api.plan_cells(tasks=[str(synth_task)], strategies=["lora"], model=str(tiny_bert))
    record = {"schema_version": store.SCHEMA_VERSION, "cell_id": spec.cell_id, "status": "ok",
              "spec": spec.to_dict(), "environment": {"hardware": other, "precision": "fp32"}}
    store.write_record(store.record_path(results, spec.cell_id), record)
    before = store.record_path(results, spec.cell_id).read_bytes()
    code, output = call_cli(monkeypatch, capsys, "run", "--matrix", synth_task, "--strategies",
                            "lora", "--model", tiny_bert, "--results", results)
    assert code == 0, output
    said = " ".join(output.split())
    label = " ".join(machine_label(other).split())
    assert "1 skipped" in said and f"from other hardware ({label})" in said
    assert f"compare {results} THAT_FOLDER" in said
    assert store.record_path(results, spec.cell_id).read_bytes() == before
