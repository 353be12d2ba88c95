"""Hyper-parameter search for one task x strategy, with Optuna.

Each trial is a cell run in this process on the training split only: it is scored on the
validation split carved from train, and never touches the test split. The first trial of a new
search is the strategy's default settings, so the search shows what tuning gains over them.

- What is searched: the strategy's `search_space` (learning rate, batch size, epochs, weight
  decay and its own knobs); settings given on the command line stay fixed.
- The study lives in SQLite: running the same command again resumes it, up to `--trials`
  finished trials in all.
- Hopeless trials are pruned: each trial reports its validation accuracy after every
  validation pass, and Optuna's median pruner stops trials below the median of earlier ones.
- The best settings are written as a preset; `peft-arena run --preset FILE` runs them as an
  ordinary cell and reports its test metrics once.
- Several objectives (`accuracy,trainable_params` or `accuracy,time`) give a Pareto front;
  the preset then holds its most accurate trial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peft_arena.cell.entry import train_cell
from peft_arena.common.errors import UserError
from peft_arena.config.spec import RUN_ONLY_KEYS, TRAIN_KEYS, CellSpec
from peft_arena.matrix.execute import preflight
from peft_arena.matrix.plan import Overrides
from peft_arena.strategies import load_strategies
from peft_arena.strategies.spaces import (
    DefaultsSpace,
    TrialSpace,
    apply_settings,
    current_settings,
    pruning_reporter,
)
from peft_arena.train.loop import NonFiniteLoss

# What each objective reads from a trial, and which way is better.
OBJECTIVES = {"accuracy": "maximize", "trainable_params": "minimize", "time": "minimize"}
# Trials that began while this many others had finished are compared by the pruner; the
# first ones only set the bar.
PRUNER_STARTUP_TRIALS = 2


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("peft-arena tune needs Optuna; install it with "
                        "pip install 'peft-arena[tune]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI prints its own lines
    return optuna


def fixed_settings(strategy: str, flags: dict[str, Any], sets: Sequence[str]) -> set[str]:
    """The settings the user gave on the command line: a search leaves them alone."""
    fixed = {key for key, value in flags.items() if value is not None}
    for scope, name, _ in Overrides(sets=list(sets)).parsed_sets():
        if scope in (None, strategy):
            fixed.add(name)
    return fixed


# ---------------------------------------------------------------- results


@dataclass
class TrialRow:
    number: int
    state: str  # complete | pruned | failed | running
    values: dict[str, float] | None
    settings: dict[str, Any]
    baseline: bool


@dataclass
class TuneResult:
    study_name: str
    storage: str
    objectives: list[str]
    trials: list[TrialRow]
    best: TrialRow
    baseline: TrialRow | None
    preset_file: Path
    ran: int  # trials run by this call

    @property
    def gain_over_defaults(self) -> float | None:
        """The best trial's validation accuracy above the baseline trial's (the settings as
        the preset gives them); None without a finished baseline."""
        if not (self.baseline and self.baseline.values):
            return None
        return self.best.values["accuracy"] - self.baseline.values["accuracy"]


def _row(trial: Any, objectives: list[str]) -> TrialRow:
    state = trial.state.name.lower()
    values = None
    if trial.values is not None and state == "complete":
        values = dict(zip(objectives, trial.values, strict=True))
    if trial.user_attrs.get("diverged"):
        state = "diverged"
    return TrialRow(trial.number, "failed" if state == "fail" else state, values,
                    trial.user_attrs.get("settings", {}), bool(trial.user_attrs.get("baseline")))


def _counts_toward_budget(row: TrialRow) -> bool:
    # An interrupted trial ("failed") is run again on resume; a diverged one has its answer.
    return row.state in ("complete", "pruned", "diverged")


# ---------------------------------------------------------------- the search


def parse_objectives(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or "accuracy" not in names or len(set(names)) != len(names):
        raise UserError(f"--objective {text!r}: use accuracy, optionally with trainable_params "
                        f"or time, e.g. --objective accuracy,trainable_params.")
    return ["accuracy", *[n for n in names if n != "accuracy"]]


def study_files(results_dir: str | Path, base: CellSpec, storage: str | None = None,
                preset_file: str | None = None) -> tuple[str, str]:
    """The study's storage and the preset file for the best settings, by default
    RESULTS/tune/<task>-<strategy>.db and .yaml."""
    folder = Path(results_dir) / "tune" / f"{base.task}-{base.strategy}"
    return storage or f"{folder}.db", preset_file or f"{folder}.yaml"


def storage_url(storage: str | Path) -> str:
    text = str(storage)
    if "://" in text:
        return text
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def tune(
    base: CellSpec,
    trials: int,
    *,
    fixed: set[str],
    storage: str | Path,
    preset_file: str | Path,
    data_dir: str | Path | None = None,
    study_name: str | None = None,
    objectives: Sequence[str] = ("accuracy",),
    on_trial: Callable[[TrialRow], None] | None = None,
) -> TuneResult:
    """Search until `trials` trials of the study have finished; write the best as a preset."""
    optuna = _optuna()
    if trials < 1:
        raise UserError("--trials must be >= 1.")
    objectives = list(objectives)
    strategy_cls = load_strategies().get(base.strategy)
    preflight([base], data_dir)  # a bad data file fails here, not inside the first trial
    name = study_name or f"{base.task}-{base.strategy}"
    url = storage_url(storage)
    single = len(objectives) == 1
    study = optuna.create_study(
        study_name=name, storage=url, load_if_exists=True,
        directions=[OBJECTIVES[o] for o in objectives],
        pruner=(optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                            n_warmup_steps=0)
                if single else optuna.pruners.NopPruner()),
    )
    # A resumed search must continue the same question, or its trials would not compare.
    identity = {"base_config": base.config_hash(), "objectives": objectives,
                "fixed": sorted(fixed)}
    if study.user_attrs.get("identity", identity) != identity:
        raise UserError(f"Study {name!r} in {storage} was started with other settings or "
                        f"objectives; pass a new --study-name or --storage.")
    study.set_user_attr("identity", identity)
    # Seeded, yet a resumed search does not replay the random draws of its first trials.
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))

    current = current_settings(base)
    if not study.trials:
        defaults = DefaultsSpace(current, fixed)
        strategy_cls(base).search_space(defaults)
        study.enqueue_trial(defaults.params, user_attrs={"baseline": True})

    def objective(trial: Any) -> float | tuple[float, ...]:
        drawn = strategy_cls(base).search_space(TrialSpace(trial, current, fixed))
        settings = {k: v for k, v in drawn.items() if k not in fixed}
        trial.set_user_attr("settings", settings)
        spec = apply_settings(base, settings)
        try:
            outcome = train_cell(spec, data_dir,
                                 on_evaluate=pruning_reporter(trial) if single else None)
        except NonFiniteLoss:
            trial.set_user_attr("diverged", True)
            raise
        trial.set_user_attr("history", outcome.result.history)
        scores = {"accuracy": outcome.val_accuracy, "trainable_params": outcome.trainable,
                  "time": outcome.train_s}
        return scores["accuracy"] if single else tuple(scores[o] for o in objectives)

    done = sum(_counts_toward_budget(_row(t, objectives)) for t in study.trials)
    remaining = max(0, trials - done)
    callbacks = [lambda _, trial: on_trial(_row(trial, objectives))] if on_trial else []
    study.optimize(objective, n_trials=remaining, catch=(NonFiniteLoss,), callbacks=callbacks,
                   gc_after_trial=True)

    rows = [_row(t, objectives) for t in study.trials]
    finished = [r for r in rows if r.values is not None]
    if not finished:
        raise UserError(f"No trial of study {name!r} finished; see the messages above, lower "
                        f"the learning rate range or fix the data.")
    if single:
        best = _row(study.best_trial, objectives)
    else:  # the Pareto front's most accurate trial
        front = [_row(t, objectives) for t in study.best_trials]
        best = max(front, key=lambda r: r.values["accuracy"])
    baseline_row = next((r for r in rows if r.baseline), None)
    path = write_preset(preset_file, apply_settings(base, best.settings), best, name, url)
    return TuneResult(name, url, objectives, rows, best, baseline_row, path, remaining)


def write_preset(path: str | Path, spec: CellSpec, best: TrialRow, study_name: str,
                 storage: str) -> Path:
    """A preset that reproduces `spec` exactly: tuned settings under the strategy, the rest
    of the training settings under defaults. Command-line flags still override either."""
    path = Path(path)
    tuned = best.settings
    defaults = {k: getattr(spec, k) for k in sorted(TRAIN_KEYS)
                if k not in tuned and k not in ("seed", *RUN_ONLY_KEYS)}
    strategy_settings = {**{k: getattr(spec, k) for k in sorted(tuned) if k in TRAIN_KEYS},
                         **{k: v for k, v in spec.peft.items()}}
    document = {
        "model": spec.model,
        "seeds": [spec.seed],
        "tasks": [spec.task_source],
        "defaults": defaults,
        "strategies": {spec.strategy: strategy_settings},
    }
    scores = ", ".join(f"{k} {v:.4g}" for k, v in (best.values or {}).items())
    header = (f"# Best trial #{best.number} of Optuna study {study_name!r} ({storage}): "
              f"validation {scores}.\n"
              f"# Tuned: {', '.join(sorted(tuned)) or 'nothing'}.\n"
              f"# Run it: peft-arena run --preset {path}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
