"""Strategies as data: each entry of a methods YAML file becomes one registered strategy.

The built-in file is methods.yaml next to this module; a plug-in can register a file of its
own with `register_methods(path)`. An entry, under the strategy's name:

    lokr:
      summary: Kronecker-product adapters (r=8, q+v)   # one line for `peft-arena list`
      peft_type: LOKR          # a peft.PeftType; absent: no PEFT, every weight trains
      learning_rate: 3.0e-3    # the method's own default rate (required)
      train: {warmup_ratio: 0.1}          # other training defaults (optional)
      peft: {r: 8, alpha: 16}             # fields of the PEFT config; an absent
                                          # target_modules means PEFT's default for the model
      search:                             # optional: the knobs `peft-arena tune` draws
        r: [4, 8, 16]                     # a list: one of these values
        module_dropout: {low: 0.0, high: 0.1}   # a range (add `log: true` for a log scale)
      extends: lora            # optional: start from a registered strategy's settings
      hooks: package.module:Class        # optional: a Strategy subclass with hook overrides
      unsupported:                        # optional: model families it cannot wrap, each
        encoder: why not                  # with its reason (strategies.applicability)

Everything the YAML states is checked when the file loads, so a misspelt PEFT field fails
with its file and entry named instead of inside a cell.
"""

from __future__ import annotations

import re
from importlib import import_module, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from peft import PeftConfig, PeftType
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

from peft_arena.common.errors import UserError
from peft_arena.config.spec import TRAIN_KEYS, CellSpec, coerce_setting
from peft_arena.config.yamlfile import load_yaml
from peft_arena.strategies.applicability import FAMILIES
from peft_arena.strategies.base import Choice, FloatRange, Strategy
from peft_arena.strategies.registry import strategies

BUILTIN_METHODS = resources.files("peft_arena.strategies") / "methods.yaml"

ENTRY_KEYS = ("summary", "peft_type", "learning_rate", "train", "peft", "search", "extends",
              "hooks", "unsupported")
_HOOKS_PATH = re.compile(r"^[\w.]+:\w+$")


class _Entry:
    """One entry being read; its `fail` names the file and the entry in every message."""

    def __init__(self, name: str, data: Any, origin: str) -> None:
        self.name, self.origin = name, origin
        if not isinstance(data, dict):
            self.fail("must be a mapping of " + ", ".join(ENTRY_KEYS))
        unknown = sorted(set(data) - set(ENTRY_KEYS))
        if unknown:
            self.fail(f"unknown key {unknown[0]!r}; known: {', '.join(ENTRY_KEYS)}")
        self.data: dict[str, Any] = data

    def fail(self, problem: str) -> NoReturn:
        raise UserError(f"Strategy {self.name!r} in {self.origin}: {problem}.")

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key) or {}
        if not isinstance(value, dict):
            self.fail(f"{key} must be a mapping")
        return value


def _parent(entry: _Entry) -> type[Strategy]:
    name = entry.data.get("extends")
    if name is None:
        return Strategy
    if name not in strategies:
        entry.fail(f"extends {name!r}, which is not registered before it "
                   f"({strategies.unknown_message(name)})")
    return strategies.get(name)


def _hooks(entry: _Entry) -> type[Strategy] | None:
    path = entry.data.get("hooks")
    if path is None:
        return None
    if not isinstance(path, str) or not _HOOKS_PATH.match(path):
        entry.fail(f"hooks {path!r} must be written module.path:ClassName")
    module_name, class_name = path.split(":")
    try:
        hooks = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        entry.fail(f"hooks {path!r} cannot be loaded ({exc})")
    if not (isinstance(hooks, type) and issubclass(hooks, Strategy)):
        entry.fail(f"hooks {path!r} is not a Strategy subclass")
    return hooks


def _config_class(entry: _Entry, parent: type[Strategy]) -> type[PeftConfig] | None:
    if "peft_type" not in entry.data:
        return parent.peft_config_class
    value = entry.data["peft_type"]
    try:
        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(str(value).upper())]
    except (ValueError, KeyError):
        known = ", ".join(sorted(t.value for t in PEFT_TYPE_TO_CONFIG_MAPPING))
        entry.fail(f"peft_type {value!r} is not a PEFT method of this peft version; "
                   f"known: {known}")


def _train_defaults(entry: _Entry, parent: type[Strategy]) -> dict[str, Any]:
    train = {**parent.train_defaults, **entry.mapping("train")}
    if "learning_rate" in entry.data:
        train["learning_rate"] = entry.data["learning_rate"]
    if "learning_rate" not in train:
        entry.fail("learning_rate is required: a default rate that suits the method")
    unknown = sorted(set(train) - TRAIN_KEYS)
    if unknown:
        entry.fail(f"train setting {unknown[0]!r} is unknown; known: "
                   f"{', '.join(sorted(TRAIN_KEYS))}")
    try:  # the checks a cell would make (a rate > 0, ...), now rather than in a cell
        train = {key: coerce_setting(key, value) for key, value in train.items()}
        CellSpec(model="defaults", task="defaults", strategy=entry.name, **train)
    except (TypeError, UserError) as exc:
        entry.fail(f"invalid ({exc})")
    return train


def _search(entry: _Entry, parent: type[Strategy], known: set[str]
            ) -> dict[str, Choice | FloatRange]:
    search = dict(parent.search)
    for key, value in entry.mapping("search").items():
        if key not in known:
            entry.fail(f"search names {key!r}, which is neither a training setting nor a "
                       f"field of its PEFT config")
        if isinstance(value, list) and value:
            search[key] = Choice(tuple(value))
        elif isinstance(value, dict) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
            search[key] = FloatRange(float(value["low"]), float(value["high"]),
                                     bool(value.get("log", False)))
        else:
            entry.fail(f"search.{key} must be a list of values or {{low: .., high: ..}}")
    return search


def _unsupported(entry: _Entry, parent: type[Strategy]) -> dict[str, str]:
    unsupported = {**parent.unsupported, **entry.mapping("unsupported")}
    for family, reason in unsupported.items():
        if family not in FAMILIES:
            entry.fail(f"unsupported names family {family!r}; families: {', '.join(FAMILIES)}")
        if not isinstance(reason, str) or not reason.strip():
            entry.fail(f"unsupported.{family} must give the reason as text")
    return unsupported


def build_strategy(name: str, data: Any, origin: str) -> type[Strategy]:
    """The Strategy subclass one entry describes (not yet registered)."""
    entry = _Entry(name, data, origin)
    parent = _parent(entry)
    hooks = _hooks(entry)
    config_class = _config_class(entry, parent)
    summary = entry.data.get("summary", "" if parent is Strategy else parent.summary)
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary.strip():
        entry.fail("summary must be one line of text")
    attributes: dict[str, Any] = {
        "__module__": (hooks or parent).__module__,
        "__doc__": summary,
        "summary": summary,
        "peft_config_class": config_class,
        "train_defaults": _train_defaults(entry, parent),
        "unsupported": _unsupported(entry, parent),
    }
    bases = tuple(b for b in (hooks, parent) if b is not None and b is not Strategy) or (Strategy,)
    cls: type[Strategy] = type(f"Strategy[{name}]", bases, attributes)
    peft = {**parent.peft_defaults, **entry.mapping("peft")}
    if peft and config_class is None:
        entry.fail("peft settings need a peft_type")
    unknown = sorted(set(peft) - cls.peft_fields())
    if unknown:
        entry.fail(f"{unknown[0]!r} is not a field of {config_class.__name__}; fields: "
                   f"{', '.join(sorted(cls.peft_fields()))}")
    cls.peft_defaults = peft
    cls.search = _search(entry, parent, set(TRAIN_KEYS) | cls.peft_fields())
    return cls


def register_methods(path: str | Path | Traversable) -> list[str]:
    """Register every entry of a methods YAML file, in file order (an entry may extend an
    earlier one); returns their names."""
    source, origin = (Path(path) if isinstance(path, str) else path), str(path)
    try:
        document = load_yaml(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"Cannot read strategy file {origin}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:  # the parser's first line names the line and column
        raise UserError(f"Strategy file {origin} is not valid YAML: "
                        f"{str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise UserError(f"Strategy file {origin} must be a mapping of strategy name -> entry.")
    for name, data in document.items():
        strategies.add(str(name), build_strategy(str(name), data, origin))
    return [str(name) for name in document]
