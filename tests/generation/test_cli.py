"""Generative tasks at the command line: listed with their kind, bad inputs stop the run
before any training with one line and exit 2."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import peft_arena
from tests.support.synthetic import KEYWORDS


def _task(folder, name: str, **settings) -> str:
    labels = json.dumps(settings.pop("labels", KEYWORDS))
    lines = [f"name: {name}", "kind: generation", "train_file: synth/train.jsonl",
             "test_file: synth/test.jsonl", f"labels: {labels}",
             *(f"{key}: {value}" for key, value in settings.items())]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_list_shows_the_generative_tasks_and_their_kind():
    done = peft_arena("list")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "agnews-gen" in line]
    assert lines and "generation" in lines[0]
    assert any("banking77-gen" in line for line in done.stdout.splitlines())


@pytest.mark.parametrize(("model", "settings", "message"), [
    ("tiny_bert", {}, "has no language-model head"),
    ("tiny_llama", {"chat_template": "always"}, "has no chat template"),
    ("tiny_llama", {"labels": ["", "river", "guitar"]}, "tokenizes to no tokens"),
    ("tiny_llama", {"prompt": "'no placeholder'"}, "exactly one {text}"),
])
def test_bad_generative_inputs_get_one_line_and_exit_2(model, settings, message, request,
                                                       data_dir, tmp_path):
    task = _task(data_dir, f"bad-{len(settings)}-{abs(hash(message)) % 1000}", **settings)
    done = peft_arena("run", "--model", request.getfixturevalue(model), "--matrix", task,
                      "--strategies", "lora", "--data-dir", data_dir,
                      "--results", tmp_path / "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "r").glob("records/*.json"))  # nothing trained


@pytest.mark.parametrize(("rows", "message"), [
    ([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": ""}],
     "row 2 has an empty completion"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "the messages have no assistant turn"),
    ([{"messages": [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"}]}], "has no chat template"),
])
def test_bad_free_text_rows_get_one_line_and_exit_2(rows, message, tiny_llama, tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows * 3), encoding="utf-8")
    task = tmp_path / "free.yaml"
    task.write_text("name: free\nkind: generation\nanswer: text\n"
                    "train_file: train.jsonl\ntest_file: test.jsonl\n", encoding="utf-8")
    done = peft_arena("run", "--model", tiny_llama, "--matrix", task, "--strategies", "lora",
                      "--results", tmp_path / "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
