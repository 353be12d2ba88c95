"""A tiny learnable task: each class has its own keyword in a sentence of shared filler."""

from __future__ import annotations

import json
import random
from pathlib import Path

# The rest of a sentence is shared filler, so a model must find the keyword to be right:
# small enough for a tiny model, impossible by chance.
KEYWORDS = ["apple", "river", "guitar"]
FILLER = [
    "the", "a", "of", "to", "and", "in", "is", "it", "that", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have",
]


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % len(KEYWORDS)
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), KEYWORDS[label])
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

