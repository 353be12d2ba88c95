"""Generated answers, scored.

Label answers: an answer names a label when, normalized (case folded, whitespace collapsed,
surrounding quotes and punctuation stripped), it equals that label's normalized name. It is
never a prefix match: an untuned chat model answers in prose ("World news is about..."), and
a prefix rule would count such an answer as "World" by accident. An answer that names no
label is invalid; it counts as wrong in accuracy and macro F1 (scikit-learn's, over the
task's labels), and the invalid share is reported on its own.

Label likelihood (`label_log_likelihoods`), as lm-evaluation-harness's multiple-choice tasks
score (its `acc`): each label's completion scored by the sum of its tokens' log-probabilities
after the prompt; the prediction is the most likely label, and no answer can be invalid. The
completion includes the end-of-sequence token, so that a label which begins another one
("Sci" and "Sci/Tech") is not favoured for being short.

Free text: exact match of the normalized answers, and chrF (sacrebleu's corpus chrF, 0-100).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from peft_arena.generation.collate import CompletionCollator
from peft_arena.generation.loss import completion_loss

INVALID = -1
_SPACE = re.compile(r"\s+")
# Stripped from both ends of an answer: quotes, brackets and sentence punctuation that a model
# adds around a label ("World.", '"Sports"'). Inner characters stay ("Sci/Tech").
_EDGES = "\"'`.,;:!?()[]{}<>*_ \t\n"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip(_EDGES)


def parse_labels(answers: Sequence[str], label_names: Sequence[str]) -> np.ndarray:
    """The label id each answer names, INVALID where it names none."""
    index: dict[str, int] = {}
    for i, name in enumerate(label_names):
        index.setdefault(normalize(name), i)
    return np.fromiter((index.get(normalize(a), INVALID) for a in answers), dtype=np.int64,
                       count=len(answers))


def label_scores(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> dict[str, float]:
    """Accuracy, macro F1 over the task's labels (an invalid answer is wrong for its true
    class and a prediction of none) and the share of invalid answers."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(n_labels)),
                                   average="macro", zero_division=0)),
        "invalid_share": float(np.mean(y_pred == INVALID)) if len(y_pred) else float("nan"),
    }


def text_scores(answers: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact match (normalized) and corpus chrF of free-text answers."""
    import sacrebleu  # imported here: only free-text tasks need it

    exact = [normalize(a) == normalize(r) for a, r in zip(answers, references, strict=True)]
    return {"exact_match": float(np.mean(exact)) if exact else float("nan"),
            "chrf": float(sacrebleu.corpus_chrf(list(answers), [list(references)]).score)}


@torch.inference_mode()
def label_log_likelihoods(model: Any, prompts: Sequence[np.ndarray],
                          label_completions: Sequence[np.ndarray], pad_id: int, *,
                          batch_size: int = 16) -> np.ndarray:
    """(examples, labels) sum of log-probabilities of each label's completion tokens after
    each prompt. Rows are scored `batch_size` prompt-label pairs at a time, padded right."""
    model.eval()
    device = next(model.parameters()).device
    n_labels = len(label_completions)
    pairs = [(p, c) for p in range(len(prompts)) for c in range(n_labels)]
    collator = CompletionCollator([prompts[p] for p, _ in pairs],
                                  [label_completions[c] for _, c in pairs], pad_id)
    lengths = np.array([len(label_completions[c]) for _, c in pairs])
    scores = np.empty(len(pairs))
    for first in range(0, len(pairs), batch_size):
        index = list(range(first, min(first + batch_size, len(pairs))))
        batch = {k: v.to(device) for k, v in collator(index).items()}
        token_losses = completion_loss(model, batch, reduction="none").double().cpu().numpy()
        # The label positions come row by row, each row's completion in order.
        ends = np.cumsum(lengths[index])
        scores[index] = [-chunk.sum() for chunk in np.split(token_losses, ends[:-1])]
    return scores.reshape(len(prompts), n_labels)
