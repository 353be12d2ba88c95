"""Generated answers parsed into labels, and scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_arena.generation.prompts import Example, PromptFormat, completion_ids, encode
from peft_arena.generation.scoring import (
    INVALID,
    label_log_likelihoods,
    label_scores,
    normalize,
    parse_labels,
    text_scores,
)
from tests.support.generation import random_llama

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def test_normalize_folds_case_space_and_edge_punctuation_only():
    assert normalize("  Sci/Tech.\n") == "sci/tech"
    assert normalize('"Sports"') == "sports"
    assert normalize("World   news") == "world news"


def test_answers_name_a_label_only_when_they_equal_it():
    answers = ["World", " sports.", '"Business"', "Sci/Tech", "SCI/TECH!",
               "World news is about the world",  # prose that begins with a label
               "Sci", "", "Sports and Business", "sci / tech"]
    assert parse_labels(answers, NAMES).tolist() == [0, 1, 2, 3, 3, INVALID, INVALID, INVALID,
                                                     INVALID, INVALID]


def test_label_scores_count_invalid_answers_as_wrong():
    y_true = np.array([0, 1, 2, 3, 0, 1])
    y_pred = parse_labels(["World", "World", "Business", "no idea", "World", "Sports!"], NAMES)
    scores = label_scores(y_true, y_pred, len(NAMES))
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["invalid_share"] == pytest.approx(1 / 6)
    # Per class F1 by hand: World p=2/3 r=1 -> 0.8; Sports p=1 r=1/2 -> 2/3; Business 1;
    # Sci/Tech: no prediction -> 0.
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1 + 0) / 4)


def test_text_scores():
    perfect = text_scores(["The cat sat.", "a dog"], ["the cat sat", "A dog"])
    assert perfect["exact_match"] == 1.0
    scores = text_scores(["the cat sat", "a frog"], ["the cat sat", "a dog"])
    assert scores["exact_match"] == 0.5
    assert 0 < scores["chrf"] < 100
    assert text_scores(["abc"], ["abc"])["chrf"] == pytest.approx(100.0)


def test_label_log_likelihoods_equal_the_sum_over_each_labels_tokens(chat_tokenizer):
    model = random_llama(chat_tokenizer)
    labels = ["red", "blue"]
    encoded = encode([Example("the apple", "red"), Example("a river of the guitar", "blue")],
                     PromptFormat(), chat_tokenizer, 64)
    options = completion_ids(chat_tokenizer, labels, chat=True)
    scores = label_log_likelihoods(model, encoded.prompt_ids, options,
                                   chat_tokenizer.pad_token_id, batch_size=3)
    assert scores.shape == (2, 2)
    for i, prompt in enumerate(encoded.prompt_ids):
        for j, option in enumerate(options):
            ids = torch.as_tensor(np.concatenate([prompt, option]))[None]
            with torch.no_grad():
                log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
            expected = sum(log_probs[len(prompt) + k - 1, t].item()
                           for k, t in enumerate(option))
            assert scores[i, j] == pytest.approx(expected, abs=1e-4)
