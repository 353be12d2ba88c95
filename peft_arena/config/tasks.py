"""Tasks are data: one YAML file each, built-in (config/builtin_tasks/) or the user's own.

A task file names where the data lives (a Hub data set, or local files), which columns hold
the text and the label, the label names and a default maximum sequence length:

    name: mytickets
    train_file: tickets_train.csv      # relative to this YAML; .csv, .jsonl or .parquet
    test_file: tickets_test.csv
    text_column: body
    label_column: queue                # ints, or strings mapped to ids in `labels` order
    labels: [billing, bug, other]      # optional: sorted distinct train labels otherwise
    max_length: 128
    on_bad_rows: error                 # or drop: see below
    drop_test_leaks: false             # true: drop test rows whose text is also in train

A generative task (`kind: generation`) trains the model to write the answer as text after a
prompt rendered from `prompt` (a template with one `{text}` placeholder), through the
tokenizer's chat template where it has one (`chat_template: auto`; `always` makes a missing
one an error, `never` skips it), with an optional `system` message. Its answer is the label's
name, scored by greedy generation (`label_scoring: generate`) or by each label's likelihood
(`likelihood`). `extends: agnews` takes another task's data, columns, labels and length, so
that `agnews-gen` reads the same files as `agnews`:

    name: agnews-gen
    extends: agnews
    kind: generation
    prompt: "Classify the topic of this news article...\n\n{text}\n\nTopic:"
    max_length: 192                    # template, text and answer together

A generative task of the user's own may answer in free text instead (`answer: text`): its
files hold a prompt and a completion column (`prompt_column`, `completion_column`; default
`prompt` and `completion`), or a `messages` column in chat form (`messages_column`), whose
last assistant turn is the completion. Its answers are scored by exact match and chrF:

    name: mysql
    kind: generation
    answer: text
    train_file: sql_train.jsonl        # {"prompt": ..., "completion": ...} per line
    test_file: sql_test.jsonl

`on_bad_rows` decides what happens to a row that cannot be used: an empty or whitespace-only
text, a missing or empty label, a float label where integer ids are expected (`1.0`), a label
id outside the label names or a label name not among them. `error` (the default) stops with
the file, the count and the first row numbers; `drop` drops such rows and the record counts
them. `drop_test_leaks` drops test rows whose text (after collapsing whitespace) also appears
in the training file; it is off by default so that the standard splits stay comparable with
published numbers. Both can also be set per run (`--set on_bad_rows=drop`), which then changes
the cells' identity like any other setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.registry import Registry
from peft_arena.config.yamlfile import load_yaml, load_yaml_file

BAD_ROW_ACTIONS = ("error", "drop")
TASK_KINDS = ("classification", "generation")
CHAT_TEMPLATE_MODES = ("auto", "always", "never")
LABEL_SCORINGS = ("generate", "likelihood")
ANSWERS = ("label", "text")
PLACEHOLDER = "{text}"
# Task settings that decide which rows a cell uses, with their defaults. A run may override
# them (CellSpec fields of the same names).
DATA_SETTINGS: dict[str, Any] = {"on_bad_rows": "error", "drop_test_leaks": False}


@dataclass(frozen=True)
class HubSource:
    path: str
    train_split: str = "train"
    test_split: str = "test"
    revision: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_column: str = "text"
    label_column: str = "label"
    labels: tuple[str, ...] | None = None
    max_length: int = 128
    hub: HubSource | None = None
    train_file: Path | None = None
    test_file: Path | None = None
    source_file: Path | None = field(default=None, compare=False)
    on_bad_rows: str = DATA_SETTINGS["on_bad_rows"]
    drop_test_leaks: bool = DATA_SETTINGS["drop_test_leaks"]
    kind: str = "classification"
    # Generation only: the prompt template, system message, chat template use and scoring.
    prompt: str | None = None
    system: str | None = None
    chat_template: str = "auto"
    label_scoring: str = "generate"
    # What a generation task answers: a label's name, or the completion text of each row.
    answer: str = "label"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    # The task whose data folder (under --data-dir) this one reads; None: its own name.
    data_task: str | None = None

    @property
    def is_local(self) -> bool:
        return self.train_file is not None

    @property
    def is_generation(self) -> bool:
        return self.kind == "generation"

    @property
    def answers_text(self) -> bool:
        """A generation task whose rows hold their own completions (no labels)."""
        return self.is_generation and self.answer == "text"

    @property
    def data_name(self) -> str:
        """The folder of the task's data under a data dir."""
        return self.data_task or self.name

    def changed_data_settings(self) -> dict[str, Any]:
        """The data settings this task sets away from their defaults."""
        return {key: getattr(self, key) for key, default in DATA_SETTINGS.items()
                if getattr(self, key) != default}


def check_data_settings(on_bad_rows: Any, drop_test_leaks: Any, origin: str) -> None:
    """One check for a task file's data settings and a run's overrides of them."""
    if on_bad_rows is not None and on_bad_rows not in BAD_ROW_ACTIONS:
        raise UserError(f"{origin}: on_bad_rows must be one of {', '.join(BAD_ROW_ACTIONS)}, "
                        f"not {on_bad_rows!r}.")
    if drop_test_leaks is not None and not isinstance(drop_test_leaks, bool):
        raise UserError(f"{origin}: drop_test_leaks must be true or false, "
                        f"not {drop_test_leaks!r}.")


_GENERATION_KEYS = ("prompt", "system", "chat_template", "label_scoring", "answer",
                    "prompt_column", "completion_column", "messages_column")
_KNOWN = {"name", "extends", "kind", "text_column", "label_column", "labels", "max_length", "hub",
          "train_file", "test_file", *DATA_SETTINGS, *_GENERATION_KEYS}


def _values(data: dict[str, Any], origin: Path) -> dict[str, Any]:
    """TaskSpec fields for the keys the file sets."""
    values: dict[str, Any] = {"name": str(data["name"]), "source_file": origin}
    for key in ("text_column", "label_column", "kind", "system", "chat_template",
                "label_scoring", "prompt", "answer", "prompt_column", "completion_column",
                "messages_column"):
        if data.get(key) is not None:
            values[key] = str(data[key])
    if data.get("labels"):
        values["labels"] = tuple(str(name) for name in data["labels"])
    if "max_length" in data:
        values["max_length"] = int(data["max_length"])
    if data.get("hub"):
        values["hub"] = HubSource(**data["hub"])
    for key in ("train_file", "test_file"):
        if data.get(key):
            path = Path(data[key])
            values[key] = path if path.is_absolute() else (origin.parent / path).resolve()
    for key in DATA_SETTINGS:
        if key in data:
            values[key] = data[key]
    return values


def _check(task: TaskSpec, origin: Path) -> TaskSpec:
    where = f"Task file {origin}"
    check_data_settings(task.on_bad_rows, task.drop_test_leaks, where)
    if task.hub is None and not (task.train_file and task.test_file):
        raise UserError(f"{where}: give both 'train_file' and 'test_file' (or a 'hub' source).")
    if task.kind not in TASK_KINDS:
        raise UserError(f"{where}: kind must be one of {', '.join(TASK_KINDS)}, "
                        f"not {task.kind!r}.")
    if not task.is_generation:
        set_here = [key for key in _GENERATION_KEYS
                    if getattr(task, key) != _TASK_DEFAULTS[key]]
        if set_here:
            raise UserError(f"{where}: {', '.join(set_here)} apply to generation tasks only; "
                            f"add `kind: generation`.")
        return task
    if task.answers_text and not task.is_local:
        raise UserError(f"{where}: a task that answers in free text reads its own files; give "
                        f"train_file and test_file.")
    if task.prompt is not None and task.prompt.count(PLACEHOLDER) != 1:
        raise UserError(f"{where}: the prompt needs exactly one {PLACEHOLDER} (where the "
                        f"example's text goes).")
    for key, allowed in (("chat_template", CHAT_TEMPLATE_MODES),
                         ("label_scoring", LABEL_SCORINGS), ("answer", ANSWERS)):
        if getattr(task, key) not in allowed:
            raise UserError(f"{where}: {key} must be one of {', '.join(allowed)}, "
                            f"not {getattr(task, key)!r}.")
    return task


def _parse(data: Any, origin: Path, parents: Registry[TaskSpec] | None = None) -> TaskSpec:
    if not isinstance(data, dict) or "name" not in data:
        raise UserError(f"Task file {origin} must be a YAML mapping with at least a 'name'.")
    unknown = set(data) - _KNOWN
    if unknown:
        raise UserError(
            f"Task file {origin}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_KNOWN))}."
        )
    values = _values(data, origin)
    if data.get("extends"):
        parent = (parents if parents is not None else builtin_tasks()).get(str(data["extends"]))
        # The parent's data, columns and labels; its kind and prompt only where not set.
        return _check(dataclasses.replace(parent, data_task=parent.data_name, **values), origin)
    return _check(TaskSpec(**values), origin)


_TASK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TaskSpec)}


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path)
    return _parse(load_yaml_file(path, "Task file"), path)


@cache
def builtin_tasks() -> Registry[TaskSpec]:
    registry: Registry[TaskSpec] = Registry("task")
    folder = resources.files("peft_arena.config") / "builtin_tasks"
    files = [(Path(str(entry)), load_yaml(entry.read_text(encoding="utf-8")))
             for entry in sorted(folder.iterdir(), key=lambda e: e.name)
             if entry.name.endswith(".yaml")]
    # Tasks that extend another come after every task they could extend.
    for path, data in sorted(files, key=lambda item: isinstance(item[1], dict)
                             and bool(item[1].get("extends"))):
        spec = _parse(data, path, registry)
        registry.add(spec.name, spec)
    return registry


def resolve_task(name_or_file: str) -> TaskSpec:
    """A built-in task by name, or a user's task from a YAML file path."""
    if name_or_file.endswith((".yaml", ".yml")):
        return load_task_file(name_or_file)
    return builtin_tasks().get(name_or_file)
