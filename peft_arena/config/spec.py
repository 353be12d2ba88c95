"""The full, resolved description of one benchmark cell (task x strategy x seed).

A `CellSpec` is plain data: it is what the matrix hands to a cell's process, what a record
stores under "spec", and what the cell's identity hash is computed from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.tasks import check_data_settings

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# torch.compile of the model's repeated blocks while training (model/compiling.py).
COMPILE_SETTINGS = ("off", "on", "auto")
# Validation metrics early stopping can watch, and whether higher is better.
EARLY_STOPPING_METRICS = {"val_accuracy": True, "val_macro_f1": True, "val_loss": False}
TRACKERS = ("wandb", "mlflow", "tensorboard")
# Settings that change how a cell is watched or what it keeps, never what it computes.
RUN_ONLY_KEYS = ("tracker", "save_model", "measure_retention")
# Settings added after records existed: left out of the config hash while at their default,
# so that a record made before a setting existed keeps its identity (and is not run again).
HASHED_WHEN_SET = ("head_learning_rate", "on_bad_rows", "drop_test_leaks", "devices_per_cell",
                   "gradient_checkpointing", "gradient_accumulation_steps", "evaluate_on",
                   "compile")
# What a cell's test step scores: the test split, or (a search trial) the validation split
# carved from train, so that a search never sees the test split.
EVALUATE_ON = ("test", "validation")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class CellSpec:
    """Everything that decides what a cell computes. Defaults suit the packaged MiniLM."""

    model: str
    task: str
    strategy: str
    seed: int = 0
    epochs: float = 3
    learning_rate: float = 5e-5
    # The classification head's own rate (None: learning_rate); see peft_arena/optim.py.
    head_learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    batch_size: int = 32
    # Forward passes per optimizer step: the effective batch is batch_size x this. On CUDA a
    # batch that runs out of memory is split further, keeping the effective batch.
    gradient_accumulation_steps: int = 1
    # Recompute activations in the backward pass instead of keeping them (less memory, ~30%
    # more compute).
    gradient_checkpointing: bool = False
    eval_batch_size: int = 128
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    val_fraction: float = 0.1
    # The data subset is drawn with its own seed so that all seeds and strategies of a task
    # see the same examples: seeds then vary training only.
    data_seed: int = 0
    # Which rows of the task's files a cell uses (see config/tasks.py). None: the task file's
    # own setting; a value set here overrides it and becomes part of the cell's identity.
    on_bad_rows: str | None = None
    drop_test_leaks: bool | None = None
    precision: str = "auto"
    # torch.compile of the repeated blocks while training: off, on, or auto (on where it was
    # measured to pay; model/compiling.py says where). Same math, fused element-wise work.
    compile: str = "auto"
    peft: dict[str, Any] = field(default_factory=dict)
    task_file: str | None = None
    # "epoch", or a number of optimizer steps between validation passes.
    eval_every: str = "epoch"
    # Stop after this many validation passes without improvement of early_stopping_metric, then
    # restore the trainable weights of the best pass before the test evaluation. None: off.
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "val_accuracy"
    # Processes (devices) one cell runs on, data-parallel; None: one. batch_size and
    # eval_batch_size stay global (each device takes its share of every batch), so a cell
    # takes the same optimizer steps on any number of devices.
    devices_per_cell: int | None = None
    # How a run is watched and what it keeps. They do not change what the cell computes, so
    # they stay out of the config hash (see RUN_ONLY_KEYS).
    tracker: str | None = None
    save_model: bool = False
    # Measure what the tuned model kept of the base (measure.retention) and the shape of its
    # weight update (measure.weight_update); false leaves both sections out of the record.
    measure_retention: bool = True
    # "validation": the test step scores the validation split instead (search trials).
    evaluate_on: str = "test"

    def __post_init__(self) -> None:
        # YAML and the command line give "200" or 200; one spelling keeps the hash stable.
        self.eval_every = str(self.eval_every).strip().lower()
        if isinstance(self.compile, bool):  # YAML 1.1 reads `compile: on` as true
            self.compile = "on" if self.compile else "off"
        self.compile = str(self.compile).strip().lower()
        if self.devices_per_cell == 1:
            self.devices_per_cell = None  # one spelling of "one device" keeps the hash stable
        checks = [
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.head_learning_rate is None or self.head_learning_rate > 0,
             "head_learning_rate must be > 0"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (isinstance(self.gradient_checkpointing, bool),
             "gradient_checkpointing must be true or false"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (0 < self.val_fraction < 1, "val_fraction must be between 0 and 1"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.compile in COMPILE_SETTINGS,
             f"compile must be one of {', '.join(COMPILE_SETTINGS)}"),
            (self.max_train_samples is None or self.max_train_samples >= 2,
             "max_train_samples must be >= 2"),
            (self.max_eval_samples is None or self.max_eval_samples >= 1,
             "max_eval_samples must be >= 1"),
            (self.eval_every == "epoch" or (self.eval_every.isdigit() and int(self.eval_every) > 0),
             "eval_every must be 'epoch' or a number of steps >= 1"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             "early_stopping_patience must be >= 1"),
            (self.early_stopping_metric in EARLY_STOPPING_METRICS,
             f"early_stopping_metric must be one of {', '.join(EARLY_STOPPING_METRICS)}"),
            (self.devices_per_cell is None
             or (isinstance(self.devices_per_cell, int) and self.devices_per_cell >= 1),
             "devices_per_cell must be a whole number >= 1"),
            (isinstance(self.measure_retention, bool),
             "measure_retention must be true or false"),
            (self.evaluate_on in EVALUATE_ON,
             f"evaluate_on must be one of {', '.join(EVALUATE_ON)}"),
            (self.tracker is None or self.tracker in TRACKERS,
             f"tracker must be one of {', '.join(TRACKERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"Bad setting for {self.task}/{self.strategy}: {message}.")
        check_data_settings(self.on_bad_rows, self.drop_test_leaks,
                            f"Bad setting for {self.task}/{self.strategy}")
        for name in (self.task, self.strategy):
            # Names become file names; refuse anything that could leave the results folder.
            if not _SAFE_NAME.match(name):
                raise UserError(
                    f"Bad name {name!r}: use letters, digits, '.', '_' or '-' only."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def config_hash(self) -> str:
        """Identity of the configuration, seed excluded: seeds of one config share it."""
        data = self.to_dict()
        for key in ("seed", *RUN_ONLY_KEYS):
            data.pop(key)
        for key in HASHED_WHEN_SET:
            if data[key] == _DEFAULTS[key]:
                data.pop(key)
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def task_source(self) -> str:
        """What `resolve_task` takes: the task's YAML file when one was given, else its name."""
        return self.task_file or self.task

    @property
    def cell_id(self) -> str:
        return f"{self.task}__{self.strategy}__seed{self.seed}__{self.config_hash()}"


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CellSpec)}
TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(CellSpec)) - {
    "model", "task", "strategy", "peft", "task_file",
}

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(CellSpec)}


def coerce_setting(key: str, value: Any) -> Any:
    """YAML reads '3e-3' as a string (YAML 1.1); numeric settings get numbers."""
    kind = str(_FIELD_TYPES.get(key, ""))
    if isinstance(value, str) and ("float" in kind or "int" in kind):
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"Setting {key}={value!r} must be a number.") from None
        return int(number) if "int" in kind and "float" not in kind and number.is_integer() \
            else number
    if value is not None and "int" in kind and "float" not in kind and isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"Setting {key}={value} must be a whole number.")
        return int(value)
    return value
