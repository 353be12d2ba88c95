"""The experiment trackers really log: a tiny cell runs with each one, and what the tracker
stored, read back through its own API or files, matches the cell's record (the metrics of
every validation pass at its step, the test metrics, the settings), all offline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from peft_arena.cell.entry import run_and_record, run_cell
from peft_arena.config.spec import CellSpec
from peft_arena.train.trackers import PROJECT, flat_config
from tests.support import faults, wandb_log
from tests.support.specs import tiny_spec

PER_PASS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "epoch")
TEST_METRICS = {"test_accuracy": "accuracy", "test_macro_f1": "macro_f1", "test_loss": "eval_loss"}


def _spec(tiny_bert, synth_task, tracker: str) -> CellSpec:
    # Two validation passes: enough to see that every pass is logged, at its own step.
    return tiny_spec(tiny_bert, synth_task, max_train_samples=30, max_eval_samples=12,
                     batch_size=8, epochs=2, learning_rate=5e-5, tracker=tracker)


def _expected_passes(record) -> list[tuple[int, dict[str, float]]]:
    history = record["history"]
    assert len(history) == 2
    return [(entry["step"], {key: pytest.approx(entry[key]) for key in PER_PASS})
            for entry in history]


def _expected_test(record) -> dict[str, float]:
    return {name: pytest.approx(record["metrics"][key]) for name, key in TEST_METRICS.items()}


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_run_holds_every_pass_the_test_metrics_and_the_settings(
        tiny_bert, synth_task, tmp_path, monkeypatch, store):
    from mlflow.tracking import MlflowClient

    # sqlite: MLflow 3's default local store; file: the folder store, which MLflow 3 keeps
    # behind an opt-in.
    uri = (f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite"
           else (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    spec = _spec(tiny_bert, synth_task, "mlflow")
    record = run_cell(spec, None, results_dir=tmp_path)

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name(PROJECT).experiment_id])
    assert run.info.run_name == spec.cell_id and run.info.status == "FINISHED"
    assert run.data.params == {key: str(value) for key, value in flat_config(spec).items()}
    logged = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
              for key in (*PER_PASS, *TEST_METRICS)}
    for step, values in _expected_passes(record):
        assert {key: logged[key][step] for key in PER_PASS} == values
    last_step = record["history"][-1]["step"]
    assert {key: logged[key][last_step] for key in TEST_METRICS} == _expected_test(record)


def test_tensorboard_events_hold_every_pass_the_test_metrics_and_the_settings(
        tiny_bert, synth_task, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    spec = _spec(tiny_bert, synth_task, "tensorboard")
    record = run_cell(spec, None, results_dir=tmp_path)

    folder = tmp_path / "tensorboard" / spec.cell_id / PROJECT
    scalars = EventAccumulator(str(folder))
    scalars.Reload()
    logged = {key: {e.step: e.value for e in scalars.Scalars(key)}
              for key in (*PER_PASS, *TEST_METRICS)}
    for step, values in _expected_passes(record):
        assert {key: logged[key][step] for key in PER_PASS} == values
    last_step = record["history"][-1]["step"]
    assert {key: logged[key][last_step] for key in TEST_METRICS} == _expected_test(record)

    # The settings: SummaryWriter.add_hparams writes them to a sub-folder of their own (and
    # Accelerate a copy as hparams.yml to another).
    [hparams_folder] = [p for p in folder.iterdir() if any(p.glob("events.out.tfevents.*"))]
    settings = EventAccumulator(str(hparams_folder))
    settings.Reload()
    content = settings.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    stored = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    values = {name: getattr(value, value.WhichOneof("kind")) for name, value in stored.items()}
    expected = flat_config(spec)
    assert values.keys() == expected.keys()
    for key, value in expected.items():
        # TensorBoard keeps numbers as doubles.
        assert values[key] == (pytest.approx(value) if isinstance(value, (int, float))
                               and not isinstance(value, bool) else value), key


def _offline_wandb(tmp_path: Path, monkeypatch) -> Path:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb keeps the settings it first read for the life of the process (a cell's process
    # is its own); a test's run must read this test's folder.
    wandb.teardown()
    return tmp_path / "wandb"


def _ended(log: Path) -> bool:
    try:
        return wandb_log.run_info(log)["exit_code"] is not None
    except Exception:  # a record still being written: read again
        return False


def _wandb_log(folder: Path, timeout_s: float = 60.0) -> Path:
    """The offline run's log, once it holds the run's end: W&B's service process writes it
    after the run finishes, so on a loaded machine the file can still be empty at first."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = list(folder.glob("offline-run-*/run-*.wandb"))
        if len(logs) == 1 and _ended(logs[0]):
            return logs[0]
        if time.monotonic() > deadline:
            [log] = logs  # one log, which never ended: the assertions say what it lacks
            return log
        time.sleep(0.2)


def test_wandb_offline_run_holds_every_pass_the_test_metrics_and_the_settings(
        tiny_bert, synth_task, tmp_path, monkeypatch):
    folder = _offline_wandb(tmp_path, monkeypatch)
    spec = _spec(tiny_bert, synth_task, "wandb")
    record = run_cell(spec, None, results_dir=tmp_path)

    log = _wandb_log(folder)
    assert wandb_log.run_info(log) == {"name": spec.cell_id, "group": "synth-lora",
                                       "exit_code": 0}
    # W&B merges values logged at one step into one row: the test metrics join the last pass.
    rows = {row["_step"]: row for row in wandb_log.history(log)}
    for step, values in _expected_passes(record):
        assert {key: rows[step][key] for key in PER_PASS} == values
    last = rows[record["history"][-1]["step"]]
    assert {key: last[key] for key in TEST_METRICS} == _expected_test(record)
    stored = wandb_log.config(log)
    assert {key: stored[key] for key in flat_config(spec)} == flat_config(spec)


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_failed_cell_ends_its_tracker_run_as_failed(tiny_bert, synth_task, tmp_path,
                                                     monkeypatch, tracker):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    folder = _offline_wandb(tmp_path, monkeypatch)
    spec = _spec(tiny_bert, synth_task, tracker)
    monkeypatch.setattr(faults.PhaseTimer, "phase",
                        faults.faulty_phase([faults.Fault.parse("error@model")], spec.cell_id))
    with pytest.raises(RuntimeError):
        run_and_record(spec, tmp_path / "records" / "cell.json", None, results_dir=tmp_path)

    if tracker == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        [run] = client.search_runs([client.get_experiment_by_name(PROJECT).experiment_id])
        assert run.info.status == "FAILED"
    else:
        assert wandb_log.run_info(_wandb_log(folder))["exit_code"] == 1
