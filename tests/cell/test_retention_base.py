"""The retention figures' base side computed apart from the cells (cell.retention_base): once
per model, task and settings, shared between processes, a new entry when either changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from peft_arena.cell.retention_base import base_inputs, fill
from tests.support.processes import process_env
from tests.support.specs import tiny_spec


def _job(model: Path, data: Path, strategy: str = "lora", seed: int = 0) -> dict:
    spec = tiny_spec(model, None, strategy, task="agnews", seed=seed)
    return {"spec": spec.to_dict(), "data_dir": str(data), "trust_remote_code": False}


def test_two_cells_of_a_model_and_task_share_one_entry_across_two_processes(
        tiny_bert_body, builtin_data, tmp_path):
    # Two cells of the same model and task (other strategy, other seed), asked for by two
    # processes at once: one of them computes the base side, the other waits and reads it.
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([_job(tiny_bert_body, builtin_data),
                                _job(tiny_bert_body, builtin_data, "full", seed=1)]))
    env = process_env(PEFT_ARENA_CACHE=str(tmp_path / "cache"))
    processes = [subprocess.Popen([sys.executable, "-m", "peft_arena.cell.retention_base",
                                   str(jobs), str(tmp_path / f"out{i}.json")], env=env,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [len(out) for out in outs] == [1, 1]  # both cells fold into one entry
    (first,), (second,) = outs
    assert first["entry"] == second["entry"]
    assert sorted([first["cache_hit"], second["cache_hit"]]) == [False, True]
    computed = first if not first["cache_hit"] else second
    assert computed["computed_by"] == "matrix" and computed["seconds"] > 0
    # The cache file holds the time of the one computation, which both report.
    assert first["seconds"] == second["seconds"] == computed["seconds"]


def test_a_changed_probe_set_or_model_gives_a_new_entry(tiny_bert_body, builtin_data,
                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path / "cache"))
    (before,) = fill([_job(tiny_bert_body, builtin_data)])
    assert not before["cache_hit"]
    (again,) = fill([_job(tiny_bert_body, builtin_data)])
    assert again["cache_hit"] and again["entry"] == before["entry"]
    # Another model (the same weights in another folder: the key names the checkpoint).
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_bert_body, other_model)
    (moved,) = fill([_job(other_model, builtin_data)])
    assert not moved["cache_hit"] and moved["entry"] != before["entry"]
    # Another probe set: one more IMDB test text to draw from.
    test_file = builtin_data / "imdb" / "test.jsonl"
    test_file.write_text(test_file.read_text()
                         + json.dumps({"text": "one more review text", "label": 1}) + "\n")
    (redrawn,) = fill([_job(tiny_bert_body, builtin_data)])
    assert not redrawn["cache_hit"]
    assert redrawn["probe_hash"] != before["probe_hash"]
    assert redrawn["entry"] not in (before["entry"], moved["entry"])


def test_the_key_follows_the_cells_base_dtype_and_probe_length(tiny_bert_body, builtin_data):
    spec = tiny_spec(tiny_bert_body, None, "lora", task="agnews")
    lora, _ = base_inputs(spec, builtin_data)
    # fp32 everywhere: a PEFT cell and full fine-tuning load the same base.
    full, _ = base_inputs(tiny_spec(tiny_bert_body, None, "full", task="agnews"), builtin_data)
    assert lora.cache_file() == full.cache_file()
    # The probe texts are cut to min(max_length, 32) tokens: 16 is another entry, 64 not.
    short, _ = base_inputs(tiny_spec(tiny_bert_body, None, "lora", task="agnews",
                                     max_length=16), builtin_data)
    long, _ = base_inputs(tiny_spec(tiny_bert_body, None, "lora", task="agnews",
                                    max_length=64), builtin_data)
    assert short.cache_file() != lora.cache_file() == long.cache_file()
    # A cell of another task probes other texts.
    banking, _ = base_inputs(tiny_spec(tiny_bert_body, None, "lora", task="banking77"),
                             builtin_data)
    assert banking.cache_file() != lora.cache_file()
