"""Tokenization cache and length-aware batching."""

from __future__ import annotations

import numpy as np

from peft_arena.data.batching import (
    Collator,
    LengthGroupedBatchSampler,
    evaluation_token_budget,
    sorted_batches,
    tokenize,
)
from peft_arena.model.loading import load_tokenizer


def test_cache_hit_returns_the_same_ids_and_a_change_misses(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    texts = ["a short one", "a somewhat longer sentence than the first", "third"]
    labels = np.array([0, 1, 2])
    first, hit = tokenize(texts, labels, tokenizer, 16)
    assert not hit
    again, hit = tokenize(texts, labels, tokenizer, 16)
    assert hit
    assert np.array_equal(first.flat, again.flat)
    assert np.array_equal(first.offsets, again.offsets)
    # A different text, or a different max length, must never be served the old ids.
    changed, hit = tokenize([*texts[:2], "third!"], labels, tokenizer, 16)
    assert not hit
    assert not np.array_equal(changed.flat, first.flat)
    shorter, hit = tokenize(texts, labels, tokenizer, 4)
    assert not hit
    assert shorter.lengths.max() == 4


def test_grouped_batches_cover_every_example_once_and_reshuffle():
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1)
    epoch_one, epoch_two = list(sampler), list(sampler)
    for batches in (epoch_one, epoch_two):
        flat = sorted(i for batch in batches for i in batch)
        assert flat == list(range(203))
        assert len(batches) == len(sampler)
    assert epoch_one != epoch_two
    # Grouping cuts padding: padded tokens per batch well below random batching.
    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)
    random_batches = [list(range(i, min(i + 8, 203))) for i in range(0, 203, 8)]
    assert padded(epoch_one) < 0.8 * padded(random_batches)
    assert list(LengthGroupedBatchSampler(lengths, 8, seed=1)) == epoch_one  # seeded


def test_eval_batches_are_sorted_and_padding_is_per_batch(tiny_bert):
    tokenizer = load_tokenizer(str(tiny_bert))
    texts = ["one", "two words here", "a b c d e f g h", "x"]
    split, _ = tokenize(texts, np.arange(4) % 3, tokenizer, 32)
    batches = sorted_batches(split.lengths, 2)
    assert [split.lengths[b].tolist() for b in batches] == sorted(
        [split.lengths[b].tolist() for b in batches], key=lambda x: -x[0])
    batch = Collator(split, tokenizer.pad_token_id)(batches[-1])
    assert batch["input_ids"].shape[1] == split.lengths[batches[-1]].max()
    assert batch["attention_mask"].sum() == split.lengths[batches[-1]].sum()


def test_a_token_budget_puts_long_texts_in_smaller_batches():
    lengths = np.array([79, 5, 12, 40, 16, 16, 9, 30, 14, 11, 20, 18])
    budget = evaluation_token_budget(lengths, 4)
    assert budget == round(4 * lengths.mean())
    batches = sorted_batches(lengths, 4, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each once
    assert all(len(b) == 1 or (len(b) <= 4 and len(b) * lengths[b].max() <= budget)
               for b in batches)
    assert batches[0] == [0]  # the longest text alone: 79 tokens fill most of the budget
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)
    assert padded(batches) < padded(sorted_batches(lengths, 4))


def test_evaluation_over_uneven_budgeted_batches_sees_every_example(tiny_bert):
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification

    from peft_arena.data.batching import IndexDataset
    from peft_arena.train.distributed import SizedBatches
    from peft_arena.train.loop import evaluate

    tokenizer = load_tokenizer(str(tiny_bert))
    texts = [" ".join(["word"] * n) for n in (30, 2, 2, 2, 25, 2, 2, 2, 2, 2)]
    split, _ = tokenize(texts, np.arange(len(texts)) % 3, tokenizer, 64)
    batches = sorted_batches(split.lengths, 4, evaluation_token_budget(split.lengths, 4))
    # Uneven, and the last batch is longer than 10 % 4: Accelerate would keep 2 of its 4.
    assert [len(b) for b in batches] == [1, 1, 4, 4]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(
        IndexDataset(len(split)), batch_sampler=SizedBatches(batches, 4),
        collate_fn=Collator(split, tokenizer.pad_token_id)))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    result = evaluate(accelerator.prepare(model), loader, accelerator, "test")
    assert result.samples == len(texts)
    assert result.y_true.tolist() == split.labels[[i for b in batches for i in b]].tolist()
