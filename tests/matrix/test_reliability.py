"""Reliability inside one process: failures become records, bad input fails early and cleanly,
results repeat, and nothing untrusted runs. (Kills, Ctrl-C and concurrent runs, which need
real processes, are in tests/matrix/test_reliability_processes.py.)"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from peft_arena import api
from peft_arena.cell.entry import run_and_record, run_cell
from peft_arena.common.errors import UserError
from peft_arena.config import yamlfile
from peft_arena.config.spec import CellSpec
from peft_arena.matrix import cell_process as cell
from peft_arena.matrix.execute import SPEC_SUFFIX, cell_lock, sweep_temp_files
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.loading import load_model
from peft_arena.records import store
from peft_arena.records.schema import SCHEMA_VERSION
from peft_arena.train.loop import NonFiniteLoss
from tests.support import faults
from tests.support.cli import call_cli_streams
from tests.support.paths import PACKAGE
from tests.support.specs import tiny_spec
from tests.support.synthetic import KEYWORDS, synthetic_rows, write_jsonl
from tests.support.tiny_models import make_custom_code_model

# A small LoRA: the cells here test what happens around training, not how well it trains.
SMALL_LORA = {"r": 4, "lora_alpha": 8}


def _record_for(spec: CellSpec) -> dict:
    return {"schema_version": SCHEMA_VERSION, "cell_id": spec.cell_id, "status": "ok",
            "spec": spec.to_dict(), "metrics": {"accuracy": 0.5}, "error": None}


# --- records on disk ------------------------------------------------------------------------


def test_half_written_files_are_never_read_and_are_swept_when_free(tmp_path):
    spec = CellSpec(model="minilm", task="imdb", strategy="lora")
    path = store.record_path(tmp_path, spec.cell_id)
    store.write_record(path, _record_for(spec))
    leftover = path.parent / f".{spec.cell_id}.k1ll3d_x.tmp"  # a writer killed mid-write
    leftover.write_text('{"schema_version": 1, "status": "ok", "spe')
    assert [r["cell_id"] for r in store.iter_records(tmp_path)] == [spec.cell_id]
    with cell_lock(tmp_path, spec.cell_id) as held:  # another run is writing this cell now
        assert held is not None
        assert sweep_temp_files(tmp_path) == 0
        assert leftover.exists()
    assert sweep_temp_files(tmp_path) == 1
    assert not leftover.exists()
    assert store.read_record(path)["status"] == "ok"


def test_a_copied_record_does_not_count_its_cell_twice(tmp_path):
    spec = CellSpec(model="minilm", task="imdb", strategy="lora")
    path = store.record_path(tmp_path, spec.cell_id)
    store.write_record(path, _record_for(spec))
    shutil.copy(path, path.with_name("copy of it.json"))
    with pytest.warns(UserWarning, match="a copy"):
        records = list(store.iter_records(tmp_path))
    assert [r["cell_id"] for r in records] == [spec.cell_id]


def test_record_paths_cannot_leave_the_results_folder(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        store.record_path(tmp_path, "../../outside")


# --- a failing cell -------------------------------------------------------------------------


@pytest.mark.parametrize("fault, error_type", [
    ("oom@train", "OutOfMemoryError"),
    ("memory@model", "MemoryError"),
    ("error@tokenize", "RuntimeError"),
])
def test_a_fault_in_the_cell_process_is_a_failed_record(fault, error_type, tmp_path, monkeypatch,
                                                         tiny_bert, synth_task):
    spec = tiny_spec(tiny_bert, synth_task, peft=SMALL_LORA)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    record_file = store.record_path(tmp_path / "results", spec.cell_id)
    log = tmp_path / "faults.log"
    monkeypatch.setenv(faults.FAULT_LOG_ENV, str(log))
    monkeypatch.setattr(PhaseTimer, "phase",
                        faults.faulty_phase([faults.Fault.parse(fault)], spec.cell_id))
    code = cell.main([str(spec_file), str(record_file), "", "--run-id", "run-7"])
    assert code == 1
    record = store.read_record(record_file)
    kind, phase = fault.split("@")
    assert record["status"] == "failed"
    assert record["error"]["type"] == error_type
    assert record["error"]["phase"] == phase
    assert "injected" in record["error"]["message"]
    assert record["metrics"] == {}  # a failed cell has no score, not a zero
    assert record["run_id"] == "run-7"
    assert log.read_text().startswith(f"{kind}@{phase} {spec.cell_id} ")


def test_fault_settings_parse_and_a_malformed_one_is_a_user_error(monkeypatch):
    monkeypatch.setenv(faults.FAULT_ENV, "oom@data@__lora__, kill@start")
    assert faults.Fault.from_env() == [faults.Fault("oom", "data", "__lora__"),
                                       faults.Fault("kill", "start", "")]
    monkeypatch.setenv(faults.FAULT_ENV, "explode@train")
    with pytest.raises(UserError, match="KIND@PHASE"):
        faults.Fault.from_env()
    assert faults.SPEC_SUFFIX == SPEC_SUFFIX  # how fault injection finds a cell's process


def test_a_huge_learning_rate_really_diverges_and_is_recorded(tmp_path, tiny_bert, synth_task):
    spec = tiny_spec(tiny_bert, synth_task, "full", learning_rate=1e6)
    record_file = store.record_path(tmp_path, spec.cell_id)
    with pytest.raises(NonFiniteLoss):
        run_and_record(spec, record_file, None, run_id="run-1")
    record = store.read_record(record_file)
    assert (record["status"], record["error"]["type"], record["error"]["phase"]) == (
        "failed", "NonFiniteLoss", "train")
    assert re.search(r"loss became (nan|inf|-inf)", record["error"]["message"])


# --- repeatable results ---------------------------------------------------------------------


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_bert, synth_task):
    def outcome(seed: int) -> tuple:
        record = run_cell(tiny_spec(tiny_bert, synth_task, peft=SMALL_LORA, seed=seed))
        return record["metrics"]["eval_loss"], record["metrics"]["accuracy"], [
            (h["train_loss"], h["val_loss"]) for h in record["history"]]

    first, again, other = outcome(0), outcome(0), outcome(1)
    assert first == again  # exactly, not approximately
    assert first[0] != other[0]
    assert first[2] != other[2]


# --- bad input: one line, exit 2, nothing touched -------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    """A good data dir, a task file over it, and a results folder holding one record."""
    data = tmp_path / "data"
    folder = data / "synth"
    folder.mkdir(parents=True)
    write_jsonl(folder / "train.jsonl", synthetic_rows(90, seed=1))
    write_jsonl(folder / "test.jsonl", synthetic_rows(30, seed=2))
    (folder / "labels.json").write_text(json.dumps(KEYWORDS))
    task = tmp_path / "synth.yaml"
    task.write_text("name: synth\nhub: {path: nobody/synth}\nmax_length: 32\n")
    results = tmp_path / "results"
    spec = api.plan_cells(tasks=[str(task)], strategies=["lora"],
                          flags={"epochs": 1, "max_train_samples": 30})[0]
    store.write_record(store.record_path(results, spec.cell_id), _record_for(spec))
    return {"data": data, "task": task, "results": results, "tmp": tmp_path}


def _break_data(folder: Path, problem: str) -> None:
    train = folder / "train.jsonl"
    rows = synthetic_rows(90, seed=1)
    if problem == "missing":
        train.unlink()
    elif problem == "empty":
        train.write_text("")
    elif problem == "not_utf8":
        train.write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    elif problem == "no_text_column":
        write_jsonl(train, [{"body": r["text"], "label": r["label"]} for r in rows])
    elif problem == "label_outside":
        write_jsonl(train, [*rows, {"text": "x", "label": 7}])
    elif problem == "class_missing":
        write_jsonl(train, [r for r in rows if r["label"] != 2])


MARKER_YAML = '!!python/object/apply:os.system ["touch {marker}"]\n'

BAD_INPUTS = [
    # (case, options replaced, extra arguments, what to break, expected message)
    ("unknown task", {"--matrix": "imbd"}, [], None, "Did you mean 'imdb'"),
    ("unknown strategy", {"--strategies": "lorra"}, [], None, "Did you mean 'lora'"),
    ("unknown setting", {}, ["--set", "bogus=1"], None, "Unknown setting 'bogus'"),
    ("negative lr", {}, ["--set", "learning_rate=-1e-3"], None, "learning_rate must be > 0"),
    ("zero lr", {}, ["--set", "learning_rate=0"], None, "learning_rate must be > 0"),
    ("zero rank", {}, ["--set", "r=0"], None, "rank must be an integer >= 1"),
    ("zero epochs", {"--epochs": "0"}, [], None, "epochs must be > 0"),
    ("empty matrix", {"--matrix": ""}, [], None, "names nothing"),
    ("comma matrix", {"--matrix": ","}, [], None, "names nothing"),
    ("empty strategies", {"--strategies": " "}, [], None, "names nothing"),
    ("missing data", {}, [], "missing", "No train file"),
    ("empty data", {}, [], "empty", "is empty"),
    ("not utf-8", {}, [], "not_utf8", "not valid UTF-8"),
    ("no text column", {}, [], "no_text_column", "no column 'text'"),
    ("label outside labels.json", {}, [], "label_outside", "a label id outside 0..2"),
    ("class missing from train", {}, [], "class_missing", "has no training example"),
    ("preset not YAML", {}, [], "preset:tasks: [synth\n", "not valid YAML"),
    ("preset runs code", {}, [], "preset:" + MARKER_YAML, "not valid YAML"),
    ("task runs code", {}, [], "task:" + MARKER_YAML, "not valid YAML"),
    ("preset key twice", {}, [], "preset:strategies: [lora]\nstrategies: [ia3]\n",
     "'strategies' appears twice"),
    ("task name escapes", {}, [], "task:name: ../../x\nhub: {path: a/b}\n", "Bad name"),
    ("no workers", {}, ["--workers", "0"], None, "--workers 0"),
    ("unknown executor", {}, ["--executor", "kubernetes"], None, "Unknown executor"),
    ("ray missing", {}, ["--executor", "ray"], "no-module:ray", "peft-arena[ray]"),
    ("submitit missing", {}, ["--executor", "slurm"], "no-module:submitit", "peft-arena[slurm]"),
    ("more devices than there are", {},
     ["--set", "devices_per_cell=4096", "--set", "batch_size=4096", "--set",
      "eval_batch_size=4096"], None, "devices_per_cell=4096 is more than"),
    ("batch does not split over devices", {}, ["--set", "devices_per_cell=2", "--set",
                                               "batch_size=15"], None, "does not split"),
    ("silent ray address", {}, ["--executor", "ray", "--ray-address", "127.0.0.1:9"], None,
     "nothing answers there"),
]


@pytest.mark.parametrize("case, replaced, extra, breakage, message", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_touches_no_record(
        case, replaced, extra, breakage, message, workspace, monkeypatch, capsys):
    marker = workspace["tmp"] / "code-ran"
    options = {"--matrix": workspace["task"], "--strategies": "lora", "--epochs": "1",
               "--max-train-samples": "30", "--data-dir": workspace["data"],
               "--results": workspace["results"], **replaced}
    if breakage and breakage.startswith(("preset:", "task:")):
        kind, _, text = breakage.partition(":")
        target = workspace["tmp"] / f"bad-{kind}.yaml"
        target.write_text(text.replace("{marker}", str(marker)))
        options["--preset" if kind == "preset" else "--matrix"] = target
    elif breakage and breakage.startswith("no-module:"):
        monkeypatch.setitem(sys.modules, breakage.partition(":")[2], None)  # not installed
    elif breakage:
        _break_data(workspace["data"] / "synth", breakage)
    before = {p: p.read_bytes() for p in workspace["results"].rglob("*") if p.is_file()}
    stamps = {p: p.stat().st_mtime_ns for p in before}

    code, _, err = call_cli_streams(monkeypatch, capsys, "run",
                                    *[part for pair in options.items() for part in pair], *extra)

    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    after = {p: p.read_bytes() for p in workspace["results"].rglob("*") if p.is_file()}
    assert after == before  # byte for byte, and no new file (no lock, no record)
    assert {p: p.stat().st_mtime_ns for p in after} == stamps
    assert not marker.exists()  # YAML never constructs Python objects


def test_report_warns_about_foreign_files_in_one_line_and_skips_them(workspace, monkeypatch,
                                                                     capsys):
    folder = store.records_dir(workspace["results"])
    (folder / "broken.json").write_text('{"schema_version": 1, "spec": ')
    (folder / "foreign.json").write_text('{"name": "not a record"}')
    code, _, err = call_cli_streams(monkeypatch, capsys, "report",
                                    "--results", workspace["results"],
                                    "--out", workspace["tmp"] / "report")
    assert code == 0, err
    for name in ("broken.json", "foreign.json"):
        lines = [line for line in err.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("warning: Skipping"), err
    assert "Traceback" not in err
    csv = (workspace["tmp"] / "report" / "results.csv").read_text().splitlines()
    assert len(csv) == 2  # the header and the one real record


# --- nothing untrusted runs -----------------------------------------------------------------


def test_no_yaml_loader_that_can_build_python_objects():
    unsafe = re.compile(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=")
    sources = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "benchmarks").glob("*.py")]
    offenders = [str(p) for p in sources if unsafe.search(p.read_text(encoding="utf-8"))]
    assert len(sources) > 10
    assert offenders == []
    # The one loader of the package adds a check to PyYAML's safe loader and nothing else.
    assert issubclass(yamlfile._StrictLoader, yaml.SafeLoader)


def test_model_code_runs_only_when_trusted(tiny_bert, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic_modules

    folder = make_custom_code_model(tiny_bert, tmp_path / "custom")
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("ARENA_REMOTE_CODE_MARKER", str(marker))
    with pytest.raises(UserError, match="--trust-remote-code"):
        load_model(str(folder), KEYWORDS, on_gpu=False)
    assert not marker.exists()

    # transformers copies trusted code into its modules cache and imports it from there.
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    model = load_model(str(folder), KEYWORDS, on_gpu=False, trust_remote_code=True)
    assert type(model).__name__ == "ArenaModel"
    assert marker.read_text() == "ran"


def test_safetensors_weights_win_over_a_pickled_checkpoint(tiny_bert, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "both"
    shutil.copytree(tiny_bert, folder)
    torch.manual_seed(123)
    other = AutoModelForSequenceClassification.from_config(
        AutoModelForSequenceClassification.from_pretrained(folder).config)
    torch.save(other.state_dict(), folder / "pytorch_model.bin")
    safe = load_file(folder / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(safe[name], other.state_dict()[name])  # the two files differ

    model = load_model(str(folder), KEYWORDS, on_gpu=False)
    assert torch.equal(model.state_dict()[name], safe[name])
