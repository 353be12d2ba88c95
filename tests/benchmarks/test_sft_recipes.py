"""The speed benchmark's TRL peers (benchmarks/sft_recipes.py) build and train on a tiny Llama:
the same token ids and loss as the generative cell, a few steps, then scored by the cell's
decoding. TRL is the `bench` extra; without it these tests are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_arena.config.spec import CellSpec
from peft_arena.generation.collate import CompletionCollator
from peft_arena.generation.loss import completion_loss
from tests.support.generation import write_keyword_task

pytest.importorskip("trl", reason="TRL is the bench extra: pip install -e '.[bench]'")
sft_recipes = pytest.importorskip("benchmarks.sft_recipes")


@pytest.fixture(scope="module")
def gen_task(data_dir):
    return write_keyword_task(data_dir, "synth-gen-peer")


@pytest.fixture(scope="module")
def tiny_chat_llama(tmp_path_factory):
    """A tiny Llama whose tokenizer has SmolLM2's chat template and eos = pad."""
    from tests.support.generation import make_chat_tokenizer, random_llama

    folder = tmp_path_factory.mktemp("tiny-chat-llama")
    tokenizer = make_chat_tokenizer()
    random_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _spec(model_dir, task) -> CellSpec:
    # 40 training rows in batches of 16: three optimizer steps, the last one short.
    return CellSpec(model=str(model_dir), task="synth-gen-peer", strategy="lora",
                    task_file=str(task), learning_rate=1e-2, epochs=1, batch_size=16,
                    max_length=40, max_train_samples=40, max_eval_samples=8,
                    precision="fp32", measure_retention=False)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_chat_llama"])
@pytest.mark.parametrize("tuned", [False, True], ids=["recipe", "tuned"])
def test_each_peer_recipe_trains_the_cells_rows_and_is_scored_as_the_cell(
        model, tuned, request, gen_task, data_dir, tmp_path):
    spec = _spec(request.getfixturevalue(model), gen_task)
    data = sft_recipes.load_generative_data(spec, data_dir)
    assert data.train.chat == (model == "tiny_chat_llama")
    trainer = sft_recipes.sft_trainer(spec, data, tuned, str(tmp_path))
    # TRL tokenizes the prompt-completion text into exactly the cell's ids and loss positions.
    assert len(trainer.train_dataset) == len(data.train) == 40
    assert sft_recipes.same_tokens(trainer, data) == 0
    args = trainer.args
    assert args.gradient_checkpointing is not tuned and args.bf16 is not tuned
    assert (args.train_sampling_strategy == "group_by_length") is tuned
    assert trainer.completion_only_loss and not trainer.padding_free

    # TRL's loss on a batch is the cell's completion loss on the same rows.
    model_ = trainer.model
    rows = list(range(4))
    ours = CompletionCollator(data.train.prompt_ids, data.train.completion_ids,
                              data.tokenizer.pad_token_id)(rows)
    theirs = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    with torch.no_grad():
        model_.eval()
        assert torch.equal(theirs["input_ids"], ours["input_ids"])
        torch.testing.assert_close(trainer.compute_loss(model_, dict(theirs)),
                                   completion_loss(model_, ours), rtol=1e-5, atol=1e-6)
        model_.train()

    before = {n: p.detach().clone() for n, p in model_.named_parameters() if p.requires_grad}
    trainer.train()
    assert trainer.state.global_step == 3
    changed = [n for n, p in model_.named_parameters()
               if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert changed and all("lora_" in n for n in changed)
    scores, seconds = sft_recipes.score_test_split(model_, data, spec.eval_batch_size)
    assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["invalid_share"] <= 1
    assert seconds > 0


def test_a_prompt_the_tokenizer_starts_with_bos_is_handed_to_trl_without_it(
        tiny_llama, gen_task, data_dir):
    data = sft_recipes.load_generative_data(_spec(tiny_llama, gen_task), data_dir)
    bos = data.tokenizer.bos_token_id
    assert all(ids[0] == bos for ids in data.train.prompt_ids)  # the cell's ids keep it
    rows = sft_recipes.prompt_completion_rows(data)
    assert not any(p.startswith(data.tokenizer.bos_token) for p in rows["prompt"])
    assert rows["completion"][0] == " " + data.train.answers[0]
    assert np.array_equal(data.tokenizer(rows["prompt"][0])["input_ids"],
                          data.train.prompt_ids[0])


def test_trls_padding_free_batch_is_not_exact_with_sdpa_so_the_tuned_recipe_pads():
    """Why the tuned recipe neither packs nor goes padding-free: with SDPA (no flash
    attention on CPU) the flattened row's attention crosses examples."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tests.support.generation import make_chat_tokenizer, random_llama

    tokenizer = make_chat_tokenizer()
    model = random_llama(tokenizer, "sdpa").eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in (7, 12, 5, 9):
        ids = torch.randint(3, len(tokenizer), (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (length - 3) + ids[-3:]})

    def loss(padding_free: bool) -> torch.Tensor:
        batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                                padding_free=padding_free)(rows)
        keys = ("input_ids", "attention_mask", "position_ids", "labels")
        with torch.no_grad():
            return model(**{k: v for k, v in batch.items() if k in keys}).loss

    assert not torch.allclose(loss(True), loss(False), rtol=1e-3)


def test_a_generative_benchmark_without_trl_is_one_line_and_exit_2(monkeypatch, capsys):
    import importlib.util

    speed = pytest.importorskip("benchmarks.speed")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "trl" else find_spec(name, *args))
    monkeypatch.setattr("sys.argv", ["speed.py", "--model", "smollm2", "--task", "agnews-gen"])
    with pytest.raises(SystemExit) as exited:
        speed.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trl is not installed" in err and ".[bench]" in err
