"""Bad rows in a user's files, as JSONL and CSV lines, and a task that holds them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.synthetic import KEYWORDS, synthetic_rows

GOOD = synthetic_rows(60, seed=3)

# Each bad input, as a JSONL line and as a CSV line (None: CSV cannot write it apart from an
# empty cell), with the words its error must contain.
BAD_ROWS = {
    "null label": ('{"text": "apple pie", "label": null}', None, "no label"),
    "no label key": ('{"text": "apple pie"}', None, "no label"),
    "empty label": ('{"text": "apple pie", "label": ""}', '"apple pie",', "no label"),
    "empty text": ('{"text": "", "label": 0}', ",0", "empty or whitespace-only text"),
    "blank text": ('{"text": " \\t ", "label": 0}', '"   ",0', "empty or whitespace-only text"),
    "null text": ('{"text": null, "label": 0}', None, "empty or whitespace-only text"),
    "float label": ('{"text": "apple pie", "label": 1.0}', '"apple pie",1.0',
                    "a float label where integer ids are expected, e.g. '?1.0'?"),
    "label out of range": ('{"text": "apple pie", "label": 3}', '"apple pie",3',
                           "a label id outside 0..2, e.g. '?3'?"),
}


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv(rows: list[dict]) -> str:
    return "text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows)


def task_with_train(folder: Path, suffix: str, train: str, *, settings: str = "",
                    labels: list[str] | None = KEYWORDS) -> Path:
    """A user task whose train file is `train` (raw text) and whose test file is clean."""
    (folder / f"train.{suffix}").write_text(train, encoding="utf-8")
    (folder / f"test.{suffix}").write_text(csv(GOOD[:12]) if suffix == "csv"
                                           else jsonl(GOOD[:12]), encoding="utf-8")
    task = folder / "t.yaml"
    task.write_text(f"name: t\ntrain_file: train.{suffix}\ntest_file: test.{suffix}\n"
                    + (f"labels: {json.dumps(labels)}\n" if labels else "") + settings)
    return task
