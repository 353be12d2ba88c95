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
from typing import Any

import numpy as np

LEAKED = "in_train"  # why a test row was dropped under drop_test_leaks
TEXT_MATCH = "exact after collapsing whitespace"


def normalise(text: str) -> str:
    # Most texts are already normal; telling so with C-speed string scans is several times
    # cheaper than splitting them into words. Every whitespace character but the space is
    # unprintable, so a printable text without a double space or an edge space is normal.
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())


class Normaliser:
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
    norm = Normaliser()
    known = set(norm(reference))
    return np.fromiter((t in known for t in norm(texts)), dtype=bool, count=len(texts))


def split_counts(splits: dict[str, list[str]], norm: Normaliser | None = None
                 ) -> dict[str, dict[str, int]]:
    """Rows, duplicates within the split, and (other than train) rows whose text is in train."""
    norm = norm or Normaliser()
    normalised = {name: norm(texts) for name, texts in splits.items()}
    train = set(normalised["train"])
    counts = {}
    for name, texts in normalised.items():
        entry = {"rows": len(texts), "duplicates": len(texts) - len(set(texts))}
        if name != "train":
            entry[LEAKED] = sum(text in train for text in texts)
        counts[name] = entry
    return counts


def record_section(full: dict[str, list[str]], used: dict[str, list[str]], *,
                   dropped: dict[str, dict[str, int]], on_bad_rows: str,
                   drop_test_leaks: bool) -> dict[str, Any]:
    """Bad rows dropped (split -> why -> rows), and duplicates and leaks of the full splits
    (train and test after dropping bad rows, before dropping leaked rows) and of the rows used
    (train, val, test)."""
    norm = Normaliser()
    full_counts = split_counts(full, norm)
    used_counts = split_counts(used, norm)
    return {
        "text_match": TEXT_MATCH,
        "on_bad_rows": on_bad_rows,
        "drop_test_leaks": drop_test_leaks,
        "dropped": dropped,
        "full": full_counts,
        "used": used_counts,
        # The test score a cell reports includes test rows whose text it may have trained on.
        "test_leaks_into_train": full_counts["test"][LEAKED] > 0 and not drop_test_leaks,
    }
