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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from peft_arena.config.registry import Registry
from peft_arena.config.yamlfile import load_yaml, load_yaml_file
from peft_arena.errors import UserError


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

    @property
    def is_local(self) -> bool:
        return self.train_file is not None


def _parse(data: Any, origin: Path) -> TaskSpec:
    if not isinstance(data, dict) or "name" not in data:
        raise UserError(f"Task file {origin} must be a YAML mapping with at least a 'name'.")
    known = {"name", "text_column", "label_column", "labels", "max_length", "hub",
             "train_file", "test_file"}
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
    return TaskSpec(
        name=str(data["name"]),
        text_column=data.get("text_column", "text"),
        label_column=data.get("label_column", "label"),
        labels=tuple(str(name) for name in labels) if labels else None,
        max_length=int(data.get("max_length", 128)),
        hub=hub,
        source_file=origin,
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
