"""Data hygiene: duplicate texts within a split, and texts shared between splits.

Two texts are the same when they are equal after collapsing every run of whitespace to one
space and stripping the ends (case and punctuation count). Counts are of rows: a text present
three times in train is two duplicates; a test row "in train" has at least one training row
with its text. The validation split is carved from train, so a validation row "in train" is a
different training row with the same text (never the row itself).

`record_section` is what a record stores under "data_hygiene" (see records/store.py);
`load_task_data(..., data_hygiene=True)` computes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from peft_arena.data.loading import Loaded, TaskData

LEAKED = "in_train"  # why a test row was dropped under drop_test_leaks
TEXT_MATCH = "exact after collapsing whitespace"


def normalise(text: str) -> str:
    # Most texts are already normal; telling so with C-speed string scans is several times
    # cheaper than splitting them into words. Every whitespace character but the space is
    # unprintable, so a printable text without a double space or an edge space is normal.
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())


class _Normaliser:
    """Normalises each distinct string once: the used splits reuse the full splits' strings."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, texts: Iterable[str]) -> list[str]:
        seen = self._seen
        out = []
        for text in texts:
            norm = seen.get(text)
            if norm is None:
                norm = seen[text] = normalise(text)
            out.append(norm)
        return out


def found_in(texts: list[str], reference: list[str]) -> np.ndarray:
    """Per row of `texts`: whether some row of `reference` has the same text."""
    norm = _Normaliser()
    known = set(norm(reference))
    return np.fromiter((t in known for t in norm(texts)), dtype=bool, count=len(texts))


def split_counts(splits: dict[str, list[str]], norm: _Normaliser | None = None
                 ) -> dict[str, dict[str, int]]:
    """Rows, duplicates within the split, and (other than train) rows whose text is in train."""
    norm = norm or _Normaliser()
    normalised = {name: norm(texts) for name, texts in splits.items()}
    train = set(normalised["train"])
    counts = {}
    for name, texts in normalised.items():
        entry = {"rows": len(texts), "duplicates": len(texts) - len(set(texts))}
        if name != "train":
            entry[LEAKED] = sum(text in train for text in texts)
        counts[name] = entry
    return counts


def record_section(loaded: Loaded, data: TaskData) -> dict[str, Any]:
    """Bad rows dropped, and duplicates and leaks of the full splits (`loaded`) and of the rows
    used (`data`)."""
    norm = _Normaliser()
    full = split_counts({"train": loaded.train_texts, "test": loaded.test_texts}, norm)
    used = split_counts({"train": data.train.texts, "val": data.val.texts,
                         "test": data.test.texts}, norm)
    return {
        "text_match": TEXT_MATCH,
        "on_bad_rows": loaded.on_bad_rows,
        "drop_test_leaks": loaded.drop_test_leaks,
        "dropped": loaded.dropped,
        "full": full,
        "used": used,
        # The test score a cell reports includes test rows whose text it may have trained on.
        "test_leaks_into_train": full["test"][LEAKED] > 0 and not loaded.drop_test_leaks,
    }
