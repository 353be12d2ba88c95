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



def _task_rows(prefix: str, n: int, labels: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": f"{prefix} {i} " + " ".join(rng.choices(["x", "y", "z"], k=4)),
             "label": i % labels} for i in range(n)]


def write_builtin_tasks(root: Path) -> Path:
    """Small folders for the three built-in tasks under `root`; the AG News test file shares
    six texts with the Banking77 files (two with different whitespace)."""
    banking_train = _task_rows("bank", 200, 77, 1)
    banking_test = _task_rows("bank test", 80, 77, 2)
    shared = [banking_train[0]["text"], banking_train[1]["text"].replace(" ", "  "),
              banking_test[0]["text"], " " + banking_test[1]["text"],
              banking_train[2]["text"], banking_test[2]["text"]]
    agnews_test = _task_rows("news", 40, 4, 3) + [{"text": t, "label": 0} for t in shared]
    for name, train, test in (
            ("banking77", banking_train, banking_test),
            ("agnews", _task_rows("news train", 120, 4, 4), agnews_test),
            ("imdb", _task_rows("review", 60, 2, 5), _task_rows("review test", 60, 2, 6))):
        folder = root / name
        folder.mkdir(parents=True)
        write_jsonl(folder / "train.jsonl", train)
        write_jsonl(folder / "test.jsonl", test)
    return root
