"""The equal-budget search: every strategy of a matrix gets the same search before the test
split is touched, so that the table ranks methods rather than their hand-picked defaults.

For each (model, task, strategy) of the matrix, one Optuna study, the same for all of them:

- the same sampler (TPE, seeded with the matrix's first seed) and the same pruner (median of
  the earlier trials at each validation pass, after PRUNER_STARTUP_TRIALS trials);
- the same draws: the learning rate (a quarter to four times the method's default, log scale)
  and the method's main knob (the first its `search` lists: LoRA's rank, prompt tuning's
  virtual tokens; see Strategy.equal_budget_space); the first trial is the default itself;
- the same budget: N trials, each one finished, pruned or failed.

A trial is a cell like any other, with `evaluate_on: validation`: it trains on the training
split and its test step scores the validation split carved from it. The test split is never
scored, so nothing the search decides can depend on it. Trials run in rounds: round k asks
every study for its k-th trial and runs them all through the matrix's executor (local
workers, Ray or Slurm), their records kept in `<results>/search/`. A trial reports each
validation pass to its study from its own process (PEFT_ARENA_TRIAL names it), so the pruner
can stop it there.

The studies live in `<results>/search/studies.db` (SQLite). An interrupted search resumes
where it stopped: a trial asked but not told runs again (or is read back from its record),
and every told trial counts toward the budget. Then the best trial's settings run on the test
split with the matrix's seeds; those records carry a `tuning` section: the budget, what the
trials cost, and the settings chosen.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec
from peft_arena.records.store import read_record, record_path, write_record
from peft_arena.strategies import load_strategies
from peft_arena.strategies.spaces import (
    DefaultsSpace,
    TrialSpace,
    apply_settings,
    current_settings,
    pruning_reporter,
)

SEARCH_SUBDIR = "search"
STUDIES_FILE = "studies.db"
TRIAL_ENV = "PEFT_ARENA_TRIAL"  # JSON naming the study and trial a cell process reports to
PRUNER_STARTUP_TRIALS = 2
PRUNED_ERROR = "TrialPruned"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("--tune-trials needs Optuna; install it with "
                        "pip install 'peft-arena[tune]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_pruner() -> Any:
    """The one pruner every study of a search uses (and each trial's process rebuilds)."""
    return _optuna().pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                          n_warmup_steps=0)


def storage_url(results_dir: Path) -> str:
    folder = Path(results_dir) / SEARCH_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / STUDIES_FILE).resolve()}"


# ---------------------------------------------------------------- inside a trial's process


def trial_reporter_from_env() -> Callable[[dict[str, Any]], None] | None:
    """The validation-pass callback of a trial cell (None outside a search): reports each
    pass's validation accuracy to the trial's study and stops the cell when pruned."""
    named = os.environ.get(TRIAL_ENV)
    if not named:
        return None
    optuna = _optuna()
    where = json.loads(named)
    study = optuna.load_study(study_name=where["study"], storage=where["storage"],
                              pruner=make_pruner())
    return pruning_reporter(optuna.trial.Trial(study, where["trial_id"]))


# ---------------------------------------------------------------- the driver


@dataclass
class GroupSearch:
    """One strategy's search within a task (and model)."""

    base: CellSpec  # the matrix's cell at its first seed, default settings
    study_name: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # told trials, in order
    best_settings: dict[str, Any] | None = None
    best_value: float | None = None
    default_value: float | None = None

    def tuning_section(self, budget: int) -> dict[str, Any]:
        states = [t["state"] for t in self.trials]
        return {
            "budget": budget,
            "trials": len(self.trials),
            "finished": states.count("complete"),
            "pruned": states.count("pruned"),
            "failed": states.count("failed"),
            "trials_s": sum(t["total_s"] or 0.0 for t in self.trials),
            "settings": self.best_settings,
            "val_accuracy": self.best_value,
            "default_val_accuracy": self.default_value,
            "evaluated_on": "validation",
            "study": self.study_name,
            "searched": "learning_rate and the method's main knob",
            "default_config_hash": self.base.config_hash(),
        }


@dataclass
class SearchResult:
    groups: list[GroupSearch]
    tuned_cells: list[CellSpec]
    budget: int


def _group_key(spec: CellSpec) -> tuple[str, str, str, str]:
    return (spec.model, spec.task_source, spec.strategy, spec.config_hash())


def _study_name(spec: CellSpec) -> str:
    return f"{spec.task}__{spec.strategy}__{spec.config_hash()}"


def _trial_spec(base: CellSpec, settings: dict[str, Any]) -> CellSpec:
    # A trial measures validation accuracy only: retention would cost time and say nothing
    # about which settings to choose.
    return dataclasses.replace(apply_settings(base, settings), evaluate_on="validation",
                               measure_retention=False, save_model=False, tracker=None)


def _outcome(record: dict[str, Any] | None) -> tuple[str, float | None, float | None]:
    """(state, validation accuracy, total seconds) of a trial's record."""
    if record is None:
        return "failed", None, None
    total = (record.get("time") or {}).get("total_s")
    accuracy = (record.get("metrics") or {}).get("accuracy")
    if record.get("status") == "ok" and accuracy is not None:
        return "complete", float(accuracy), total
    error = (record.get("error") or {}).get("type")
    return ("pruned" if error == PRUNED_ERROR else "failed"), None, total


def run_search(cells: list[CellSpec], results_dir: str | Path, trials: int, *,
               run_round: Callable[[list[CellSpec], dict[str, dict[str, str]], Path], Any],
               on_trial: Callable[[GroupSearch, dict[str, Any]], None] | None = None
               ) -> SearchResult:
    """Search every strategy group of `cells` with the same budget of `trials` trials.

    run_round(trial_cells, env_by_cell_id, search_results_dir) runs one round of trial cells
    through the matrix's executor (matrix.execute.run_matrix) and writes their records.
    Returns each group's search and the tuned cells (every seed of the matrix) to run next.
    """
    optuna = _optuna()
    if trials < 1:
        raise UserError("--tune-trials must be >= 1.")
    results = Path(results_dir)
    search_dir = results / SEARCH_SUBDIR
    url = storage_url(results)
    registry = load_strategies()
    groups: dict[tuple[str, str, str, str], list[CellSpec]] = {}
    for spec in cells:
        groups.setdefault(_group_key(spec), []).append(spec)
    searches, studies = [], []
    for specs in groups.values():
        base = min(specs, key=lambda s: s.seed)
        name = _study_name(base)
        study = optuna.create_study(
            study_name=name, storage=url, load_if_exists=True, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=base.seed), pruner=make_pruner())
        if not study.trials:  # the first trial of every search is the method's default
            defaults = DefaultsSpace(current_settings(base))
            registry.get(base.strategy)(base).equal_budget_space(defaults)
            study.enqueue_trial(defaults.params, user_attrs={"default": True})
        searches.append(GroupSearch(base, name))
        studies.append(study)

    def told(study: Any) -> list[Any]:
        return [t for t in study.trials if t.state.is_finished()]

    for _ in range(trials):
        pending: list[tuple[GroupSearch, Any, Any, CellSpec]] = []
        for search, study in zip(searches, studies, strict=True):
            if len(told(study)) >= trials:
                continue
            running = [t for t in study.trials if t.state.name == "RUNNING"]
            # Resume a trial asked before an interruption rather than draw a new one.
            trial = (optuna.trial.Trial(study, running[0]._trial_id) if running
                     else study.ask())
            strategy = registry.get(search.base.strategy)(search.base)
            settings = strategy.equal_budget_space(
                TrialSpace(trial, current_settings(search.base), set()))
            pending.append((search, study, trial, _trial_spec(search.base, settings)))
        if not pending:
            break
        env = {spec.cell_id: {TRIAL_ENV: json.dumps(
            {"storage": url, "study": search.study_name, "trial_id": trial._trial_id})}
            for search, _, trial, spec in pending}
        run_round([spec for *_, spec in pending], env, search_dir)
        for search, study, trial, spec in pending:
            record = _read(search_dir, spec.cell_id)
            state, value, total_s = _outcome(record)
            if record is None:
                continue  # interrupted or lost: asked again on resume
            states = {"complete": optuna.trial.TrialState.COMPLETE,
                      "pruned": optuna.trial.TrialState.PRUNED,
                      "failed": optuna.trial.TrialState.FAIL}
            study.tell(trial, value if state == "complete" else None, state=states[state])
            entry = {"number": trial.number, "state": state, "val_accuracy": value,
                     "total_s": total_s, "settings": dict(trial.params),
                     "cell_id": spec.cell_id}
            if on_trial:
                on_trial(search, entry)

    tuned = []
    for search, study in zip(searches, studies, strict=True):
        search.trials = [_told_entry(t, search.base, search_dir) for t in told(study)]
        complete = [t for t in search.trials if t["state"] == "complete"]
        default = next((t for t in search.trials if t.get("default")), None)
        search.default_value = default["val_accuracy"] if default else None
        if not complete:
            continue
        best = max(complete, key=lambda t: (t["val_accuracy"], -t["number"]))
        search.best_settings, search.best_value = best["settings"], best["val_accuracy"]
        tuned_base = apply_settings(search.base, best["settings"])
        for spec in groups[_group_key(search.base)]:
            tuned.append(dataclasses.replace(tuned_base, seed=spec.seed))
    return SearchResult(searches, tuned, trials)


def _read(search_dir: Path, cell_id: str) -> dict[str, Any] | None:
    path = record_path(search_dir, cell_id)
    return read_record(path) if path.exists() else None


def _told_entry(trial: Any, base: CellSpec, search_dir: Path) -> dict[str, Any]:
    settings = dict(trial.params)
    spec = _trial_spec(base, settings)
    _, value, total_s = _outcome(_read(search_dir, spec.cell_id))
    state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, "failed")
    return {"number": trial.number, "state": state,
            "val_accuracy": trial.value if state == "complete" else value,
            "total_s": total_s, "settings": settings, "cell_id": spec.cell_id,
            "default": bool(trial.user_attrs.get("default"))}


def _tuned_map(result: SearchResult) -> dict[str, GroupSearch]:
    """Tuned cell id -> the search that chose its settings."""
    found = {}
    for search in result.groups:
        if search.best_settings is None:
            continue
        tuned_base = apply_settings(search.base, search.best_settings)
        for spec in result.tuned_cells:
            if (spec.model, spec.task_source, spec.strategy) == (
                    search.base.model, search.base.task_source, search.base.strategy) and \
                    spec.config_hash() == tuned_base.config_hash():
                found[spec.cell_id] = search
    return found


def add_tuning_sections(result: SearchResult, results_dir: str | Path) -> int:
    """Write each tuned cell's `tuning` section into its record; returns how many."""
    written = 0
    for cell_id, search in _tuned_map(result).items():
        path = record_path(Path(results_dir), cell_id)
        if not path.exists():
            continue
        record = read_record(path)
        record["tuning"] = search.tuning_section(result.budget)
        write_record(path, record)
        written += 1
    return written


# ---------------------------------------------------------------- a matrix with its search


@dataclass
class TunedMatrix:
    defaults: Any  # MatrixResult of the cells at their default settings
    search: SearchResult
    tuned: Any  # MatrixResult of the best settings on the test split
    trial_results: list[Any]  # MatrixResult of each round of trials

    def combined(self) -> Any:
        """One MatrixResult over the default and the tuned cells (trials aside), with the
        search attached as `search`."""
        result = self.defaults
        if self.tuned is not None:
            result.outcomes += self.tuned.outcomes
            result.planned += self.tuned.planned
            result.interrupted = result.interrupted or self.tuned.interrupted
            result.base_side.entries += self.tuned.base_side.entries
            result.base_side.seconds += self.tuned.base_side.seconds
            result.base_side.error = result.base_side.error or self.tuned.base_side.error
        result.interrupted = result.interrupted or any(r.interrupted for r in self.trial_results)
        result.search = self.search
        return result


def run_tuned_matrix(cells: list[CellSpec], results_dir: str | Path, trials: int, *,
                     data_dir: str | Path | None = None, **matrix_options: Any) -> TunedMatrix:
    """The matrix at its defaults, the equal-budget search, then the best settings on the
    test split: one call for `peft-arena run --tune-trials N`. `matrix_options` go to every
    run_matrix call (executor, on_event, trust_remote_code, ...)."""
    from peft_arena.matrix.execute import run_matrix  # the search module stays importable
                                                      # from a cell's process without it

    results = Path(results_dir)
    defaults = run_matrix(cells, results, data_dir, **matrix_options)
    rounds: list[Any] = []
    if defaults.interrupted:
        return TunedMatrix(defaults, SearchResult([], [], trials), None, rounds)

    def run_round(trial_cells: list[CellSpec], env: dict[str, dict[str, str]],
                  folder: Path) -> None:
        rounds.append(run_matrix(trial_cells, folder, data_dir, cell_env=env,
                                 **matrix_options))
        if rounds[-1].interrupted:
            raise KeyboardInterrupt

    try:
        search = run_search(cells, results, trials, run_round=run_round)
    except KeyboardInterrupt:  # the trials that finished are in the studies: run again
        return TunedMatrix(defaults, SearchResult([], [], trials), None, rounds)
    tuned = run_matrix(search.tuned_cells, results, data_dir, **matrix_options) \
        if search.tuned_cells else None
    add_tuning_sections(search, results)
    return TunedMatrix(defaults, search, tuned, rounds)
