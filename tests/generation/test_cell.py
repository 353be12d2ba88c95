"""A generative cell end to end on a tiny random Llama: the record it writes."""

from __future__ import annotations

import json

import pytest

from peft_arena.cell.entry import run_cell
from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import load_task_file
from peft_arena.matrix.budget import plan_memory
from tests.support.generation import write_keyword_task
from tests.support.records import undeclared
from tests.support.synthetic import KEYWORDS


@pytest.fixture(scope="module")
def gen_task(data_dir):
    return write_keyword_task(data_dir, "synth-gen")


def _spec(model_dir, strategy, task, **settings) -> CellSpec:
    values = {"learning_rate": 1e-2, "epochs": 1, "batch_size": 16, "max_length": 40,
              "max_train_samples": 48, "max_eval_samples": 12, "precision": "fp32",
              "measure_retention": False, **settings}
    return CellSpec(model=str(model_dir), task="synth-gen", strategy=strategy,
                    task_file=str(task), **values)


def test_a_generation_task_file_parses(gen_task):
    task = load_task_file(gen_task)
    assert task.kind == "generation" and task.prompt == "Text: {text}\nKeyword:"
    assert task.chat_template == "auto" and task.label_scoring == "generate"


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_a_generative_cell_records_its_kind_scores_and_decoding(strategy, tiny_llama, gen_task,
                                                                 data_dir):
    record = run_cell(_spec(tiny_llama, strategy, gen_task), data_dir)
    assert record["status"] == "ok" and record["task_kind"] == "generation"
    assert record["resolved"]["task_kind"] == "generation"
    assert undeclared(record) == []
    if strategy == "lora":
        assert record["resolved"]["peft_config"]["task_type"] == "CAUSAL_LM"
        assert record["resolved"]["peft_config"]["modules_to_save"] is None  # no head
    metrics = record["metrics"]
    for key in ("accuracy", "macro_f1", "invalid_share", "eval_loss"):
        assert 0 <= metrics[key] <= (1 if key != "eval_loss" else 1e3), key
    assert set(metrics["zero_shot"]) == {"accuracy", "macro_f1", "invalid_share"}
    phases = record["time"]["phases"]
    assert phases["decode_s"] > 0 and phases["zero_shot_s"] > 0
    generation = record["generation"]
    assert generation["prompt"]["example_prompt"].startswith("Text: ")
    assert generation["prompt"]["example_prompt"].endswith("\nKeyword:")
    assert generation["decoding"]["tokens_per_s"] > 0
    assert generation["decoding"]["examples"] == len(record["predictions"]["y_true"]) == 12
    assert generation["zero_shot"]["examples"] == 12
    assert len(record["predictions"]["y_pred"]) == 12
    assert record["history"] and record["history"][-1]["val_accuracy"] is not None
    # The memory estimate is of the causal LM at the lengths trained, with the LM head's
    # logits at each row's completion only, as the dry run estimates them from the labels.
    estimate = record["memory_tools"]["estimate"]
    vocab = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    planned = plan_memory([_spec(tiny_llama, strategy, gen_task)])[0]
    assert estimate["logits_bytes"] == planned.logits_bytes
    completion = planned.logits_bytes / (3 * 16 * vocab * 4)
    assert completion == int(completion) and 2 <= completion < 40  # label tokens and eos
    assert 0 < estimate["length"] <= 40 and planned.length == 40


def test_the_zero_shot_score_is_measured_once_per_model_and_task(tiny_llama, gen_task,
                                                                  data_dir):
    first = run_cell(_spec(tiny_llama, "lora", gen_task, seed=3), data_dir)
    again = run_cell(_spec(tiny_llama, "ia3", gen_task, seed=4), data_dir)
    assert again["generation"]["zero_shot"]["cached"] is True
    assert {k: again["metrics"]["zero_shot"][k] for k in ("accuracy", "invalid_share")} == \
        {k: first["metrics"]["zero_shot"][k] for k in ("accuracy", "invalid_share")}


def test_a_generative_task_on_an_encoder_is_a_one_line_error(tiny_bert, gen_task, data_dir):
    with pytest.raises(UserError, match="has no language-model head") as caught:
        run_cell(_spec(tiny_bert, "lora", gen_task), data_dir)
    assert "\n" not in str(caught.value)


def _write_text_task(folder, chat: bool) -> str:
    from tests.support.synthetic import synthetic_rows, write_jsonl

    def rows(n, seed):
        out = []
        for row in synthetic_rows(n, seed):
            answer = f"the {KEYWORDS[row['label']]}"
            out.append({"messages": [{"role": "user", "content": row["text"]},
                                     {"role": "assistant", "content": answer}]} if chat else
                       {"prompt": row["text"], "completion": answer})
        return out

    name = "chat-task" if chat else "text-task"
    (folder / name).mkdir(exist_ok=True)
    write_jsonl(folder / name / "train.jsonl", rows(60, 5))
    write_jsonl(folder / name / "test.jsonl", rows(12, 6))
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nkind: generation\nanswer: text\n"
                    f"train_file: {name}/train.jsonl\ntest_file: {name}/test.jsonl\n"
                    "max_length: 96\n")  # the tiny tokenizer spells chat markers out in bytes
    return str(path)


@pytest.mark.parametrize("chat", [False, True])
def test_a_user_free_text_task_runs_and_scores_exact_match_and_chrf(chat, tmp_path, tiny_llama,
                                                                     data_dir):
    task = _write_text_task(tmp_path, chat)
    if chat:  # the tiny tokenizer has no chat template: give it SmolLM2's
        from transformers import AutoTokenizer

        from tests.support.generation import CHAT_TEMPLATE

        model_dir = tmp_path / "chat-llama"
        for file in tiny_llama.iterdir():
            (model_dir / file.name).parent.mkdir(exist_ok=True)
            (model_dir / file.name).write_bytes(file.read_bytes())
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(model_dir)
    else:
        model_dir = tiny_llama
    spec = CellSpec(model=str(model_dir), task=task.rsplit("/", 1)[1].removesuffix(".yaml"),
                    strategy="full", task_file=task, learning_rate=3e-3, epochs=1,
                    batch_size=8, max_length=96, precision="fp32", measure_retention=False)
    record = run_cell(spec, data_dir)
    assert record["status"] == "ok" and undeclared(record) == []
    metrics = record["metrics"]
    assert metrics["accuracy"] == metrics["exact_match"] and 0 <= metrics["chrf"] <= 100
    assert metrics["macro_f1"] is None and set(metrics["zero_shot"]) == {
        "accuracy", "exact_match", "chrf"}
    generation = record["generation"]
    assert generation["answer"] == "text" and generation["label_scoring"] is None
    assert generation["prompt"]["chat_template"] is chat
    if chat:
        assert generation["prompt"]["example_prompt"].startswith("<|im_start|>user\n")
    assert generation["decoding"]["examples"] == 12
