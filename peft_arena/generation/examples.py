"""A generative task's rows as prompt -> completion examples.

A user's file (JSONL, CSV or Parquet) holds either

- a prompt column and a completion column (default names `prompt` and `completion`), or
- a `messages` column in chat form: a list of `{"role": ..., "content": ...}` turns (in a CSV
  cell, that list as JSON). The last assistant turn is the completion to learn; the turns
  before it are the prompt, rendered with the tokenizer's chat template.

A built-in label task becomes one by answering each row with its label's name
(`label_examples`). Every problem is a one-line `UserError` naming the file and the row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peft_arena.common.errors import UserError
from peft_arena.data.files import read_table
from peft_arena.generation.prompts import Example

ROLES = ("system", "user", "assistant")


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def label_examples(texts: Sequence[str], labels: Sequence[int], label_names: Sequence[str]
                   ) -> list[Example]:
    """A classification split as generation: each text answered with its label's name."""
    return [Example(str(text), label_names[int(label)])
            for text, label in zip(texts, labels, strict=True)]


def _turns(value: Any, where: str, row: int) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"{where}: row {row}: `messages` is not a JSON list of turns; "
                            f"write [{{\"role\": \"user\", \"content\": ...}}, ...].") from None
    if isinstance(value, np.ndarray):  # Parquet's list of structs
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: row {row}: `messages` must be a non-empty list of "
                        f"{{\"role\", \"content\"}} turns.")
    turns = []
    for turn in value:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES \
                or not isinstance(turn.get("content"), str):
            raise UserError(f"{where}: row {row}: every turn needs a role ({', '.join(ROLES)}) "
                            f"and a text content, not {turn!r}.")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def chat_example(value: Any, where: str, row: int) -> Example:
    """A `messages` cell as an example: the last assistant turn answers the turns before."""
    turns = _turns(value, where, row)
    answers = [i for i, turn in enumerate(turns) if turn["role"] == "assistant"]
    if not answers:
        raise UserError(f"{where}: row {row}: the messages have no assistant turn; the last "
                        f"assistant turn is the completion to learn.")
    last = answers[-1]
    if not turns[last]["content"].strip():
        raise UserError(f"{where}: row {row} has an empty completion (its last assistant "
                        f"turn); give every example an answer.")
    users = [i for i in range(last) if turns[i]["role"] == "user"]
    if not users:
        raise UserError(f"{where}: row {row}: no user turn before the assistant's answer.")
    prompt = tuple(turns[:last])
    return Example(turns[users[-1]]["content"], turns[last]["content"], messages=prompt)


def examples_from_frame(frame: pd.DataFrame, where: str, *, prompt_column: str = "prompt",
                        completion_column: str = "completion",
                        messages_column: str = "messages") -> list[Example]:
    if messages_column in frame.columns:
        return [chat_example(value, where, row)
                for row, value in enumerate(frame[messages_column].tolist(), start=1)]
    for column in (prompt_column, completion_column):
        if column not in frame.columns:
            raise UserError(f"{where}: no column {column!r} (found: "
                            f"{', '.join(map(str, frame.columns))}); a generative task needs "
                            f"{prompt_column!r} and {completion_column!r} columns, or a "
                            f"{messages_column!r} column.")
    examples = []
    rows = zip(frame[prompt_column].tolist(), frame[completion_column].tolist(), strict=True)
    for row, (prompt, completion) in enumerate(rows, start=1):
        if _missing(completion):
            raise UserError(f"{where}: row {row} has an empty completion; give every example "
                            f"an answer.")
        if _missing(prompt):
            raise UserError(f"{where}: row {row} has an empty prompt.")
        examples.append(Example(str(prompt), str(completion)))
    return examples


def read_examples(path: str | Path, **columns: str) -> list[Example]:
    """The examples of a user's generative data file (see the module's docstring)."""
    path = Path(path)
    return examples_from_frame(read_table(path), str(path), **columns)
