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

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.registry import Registry
from peft_arena.config.yamlfile import load_yaml, load_yaml_file

BAD_ROW_ACTIONS = ("error", "drop")
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

    @property
    def is_local(self) -> bool:
        return self.train_file is not None

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


def _parse(data: Any, origin: Path) -> TaskSpec:
    if not isinstance(data, dict) or "name" not in data:
        raise UserError(f"Task file {origin} must be a YAML mapping with at least a 'name'.")
    known = {"name", "text_column", "label_column", "labels", "max_length", "hub",
             "train_file", "test_file", *DATA_SETTINGS}
    unknown = set(data) - known
    if unknown:
        raise UserError(
            f"Task file {origin}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(known))}."
        )
    hub = HubSource(**data["hub"]) if data.get("hub") else None
    files = {}
    for key in ("train_file", "test_file"):
        if data.get(key):
            path = Path(data[key])
            files[key] = path if path.is_absolute() else (origin.parent / path).resolve()
    if hub is None and len(files) != 2:
        raise UserError(
            f"Task file {origin}: give both 'train_file' and 'test_file' (or a 'hub' source)."
        )
    labels = data.get("labels")
    settings = {key: data.get(key, default) for key, default in DATA_SETTINGS.items()}
    check_data_settings(settings["on_bad_rows"], settings["drop_test_leaks"],
                        f"Task file {origin}")
    return TaskSpec(
        name=str(data["name"]),
        text_column=data.get("text_column", "text"),
        label_column=data.get("label_column", "label"),
        labels=tuple(str(name) for name in labels) if labels else None,
        max_length=int(data.get("max_length", 128)),
        hub=hub,
        source_file=origin,
        **settings,
        **files,
    )


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path)
    return _parse(load_yaml_file(path, "Task file"), path)


@cache
def builtin_tasks() -> Registry[TaskSpec]:
    registry: Registry[TaskSpec] = Registry("task")
    folder = resources.files("peft_arena.config") / "builtin_tasks"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            spec = _parse(load_yaml(entry.read_text(encoding="utf-8")), Path(str(entry)))
            registry.add(spec.name, spec)
    return registry


def resolve_task(name_or_file: str) -> TaskSpec:
    """A built-in task by name, or a user's task from a YAML file path."""
    if name_or_file.endswith((".yaml", ".yml")):
        return load_task_file(name_or_file)
    return builtin_tasks().get(name_or_file)
