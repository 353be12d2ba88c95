"""The command line end to end on a tiny model: run, skip on rerun, report, errors."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import peft_arena


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert, synth_task):
    results = tmp_path_factory.mktemp("results")
    done = peft_arena("run", "--matrix", synth_task, "--strategies", "full,lora",
                      "--model", tiny_bert, "--epochs", 3, "--results", results,
                      "--set", "learning_rate=1e-2", "--set", "full.learning_rate=3e-3",
                      "--set", "batch_size=16")
    return results, done


@pytest.mark.slow  # a matrix of cell processes through the CLI: 2 minutes on 2 busy cores
def test_run_writes_one_record_per_cell(finished_run):
    results, done = finished_run
    assert done.returncode == 0, done.stdout + done.stderr
    records = sorted((results / "records").glob("*.json"))
    assert len(records) == 2
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "ok"
        assert 0 <= record["metrics"]["accuracy"] <= 1
        assert record["params"]["trainable"] <= record["params"]["total"]
        assert record["memory"]["peak_bytes"] > 50 * 2**20
        assert len(record["history"]) == 3
        # `--set full.learning_rate` outranks the plain `--set learning_rate`.
        wanted = 3e-3 if record["spec"]["strategy"] == "full" else 1e-2
        assert record["spec"]["learning_rate"] == wanted
        phases = record["time"]["phases"]
        assert set(phases) == {"setup_s", "data_s", "tokenize_s", "model_s", "train_s",
                               "validate_s", "eval_s", "measure_s", "retention_s"}
        assert sum(phases.values()) <= record["time"]["total_s"]
    full = json.loads(next((results / "records").glob("synth__full__*.json")).read_text())
    assert full["metrics"]["accuracy"] > 0.55  # three classes: chance is a third


@pytest.mark.slow  # needs the matrix run above
def test_rerun_skips_recorded_cells(finished_run, tiny_bert, synth_task):
    results, _ = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in (results / "records").glob("*.json")}
    again = peft_arena("run", "--matrix", synth_task, "--strategies", "full,lora",
                       "--model", tiny_bert, "--epochs", 3, "--results", results,
                       "--set", "learning_rate=1e-2", "--set", "full.learning_rate=3e-3",
                       "--set", "batch_size=16")
    assert again.returncode == 0
    assert "2 skipped" in again.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (results / "records").glob("*.json")}
    assert after == before


@pytest.mark.slow  # needs the matrix run above
def test_report_renders(finished_run):
    results, _ = finished_run
    done = peft_arena("report", "--results", results)
    assert done.returncode == 0, done.stderr
    board = (results / "leaderboard.md").read_text()
    assert "synth" in board and "lora" in board and "full" in board
    assert (results / "results.csv").stat().st_size > 0
    assert (results / "charts" / "accuracy.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["run", "--matrix", "imbd"], "Did you mean 'imdb'"),
    (["run", "--matrix", "imdb", "--strategies", "lorra"], "Did you mean 'lora'"),
    (["run", "--matrix", "imdb", "--set", "lora.r=0"], "rank must be"),
    (["run", "--matrix", "imdb", "--preset", "nope"], "Unknown preset"),
    (["run", "--matrix", "imdb", "--data-dir", "/no/such/dir"], "does not exist"),
])
def test_user_mistakes_get_one_line_and_exit_2(args, message, tmp_path):
    done = peft_arena(*args, "--results", tmp_path / "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_report_without_records_is_a_user_error(tmp_path):
    done = peft_arena("report", "--results", tmp_path)
    assert done.returncode == 2
    assert "No records" in done.stderr


def test_list_shows_strategies_and_tasks():
    done = peft_arena("list")
    assert done.returncode == 0
    for name in ("full", "lora", "qlora", "ia3", "adalora", "imdb", "agnews", "banking77"):
        assert name in done.stdout


def test_dry_run_trains_nothing(tmp_path):
    done = peft_arena("run", "--matrix", "banking77", "--dry-run", "--results", tmp_path)
    assert done.returncode == 0
    assert "5 cells" in done.stdout
    assert not (tmp_path / "records").exists()
