"""The library API the CLI calls; usable from Python too.

    from peft_arena import api
    cells = api.plan_cells(tasks=["banking77"], strategies=["lora", "ia3"])
    result = api.run(cells, results_dir="results", data_dir="data",
                     executor=api.executor_settings(name="ray"))

Each command of the CLI builds one request (`RunRequest`, `ReportRequest`, ...) from its
options and makes one call here (`run_request`, `dry_run`, `report`, `compare`, `export`,
`predict`, `tune`, `listing`); the CLI itself only parses, shows progress and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft_arena.common.errors import UserError
from peft_arena.config.presets import DEFAULT_PRESET, available_presets, load_preset
from peft_arena.config.spec import EARLY_STOPPING_METRICS, PRECISIONS, TRACKERS, CellSpec
from peft_arena.config.tasks import builtin_tasks
from peft_arena.matrix.executors import ExecutorSettings

# The layers below that load torch or pandas are imported inside the functions that use
# them: `peft-arena --help`, `list` and `report` stay quick and never load torch.
if TYPE_CHECKING:
    from peft_arena.matrix.budget import ParameterCount
    from peft_arena.matrix.execute import Event, MatrixResult
    from peft_arena.report.build import ReportResult
    from peft_arena.report.compare import Comparison
    from peft_arena.tools.predict import Predictions
    from peft_arena.tools.tune import TrialRow, TuneResult
    from peft_arena.train.memory_estimate import MemoryEstimate


def plan_cells(
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    *,
    model: str | None = None,
    preset: str = DEFAULT_PRESET,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> list[CellSpec]:
    """Every cell of the matrix, fully resolved. Unset arguments come from the preset."""
    from peft_arena.matrix.plan import Overrides, build_cells

    loaded = load_preset(preset)
    return build_cells(
        loaded,
        tasks if tasks is not None else loaded.default_tasks(model),
        strategies if strategies is not None else loaded.strategies,
        seeds if seeds is not None else loaded.seeds,
        Overrides(flags=flags or {}, sets=sets or []),
        model=model,
    )


def plan_parameters(cells: list[CellSpec], data_dir: str | Path | None = None
                    ) -> list[ParameterCount]:
    """Trainable and total parameters of each cell, from the models' configs alone (no
    weights are loaded or allocated). `data_dir` is read only for tasks that name no labels."""
    from peft_arena.matrix import budget

    return budget.plan_parameters(cells, data_dir)


def executor_settings(preset: str = DEFAULT_PRESET, **overrides: Any) -> ExecutorSettings:
    """Where cells run: the preset's `executor:` section, then `overrides` (name, workers,
    ray_address, slurm={partition, time_min, ...}) that are not None."""
    return ExecutorSettings.from_preset(load_preset(preset).executor, **overrides)


def plan_memory(cells: list[CellSpec], data_dir: str | Path | None = None
                ) -> list[MemoryEstimate]:
    """An estimate of each cell's training memory from the models' configs alone: weights by
    dtype and quantization, gradients and AdamW states, activations with and without gradient
    checkpointing (peft_arena.train.memory_estimate says what it counts)."""
    from peft_arena.matrix import budget

    return budget.plan_memory(cells, data_dir)


def run(cells: list[CellSpec], results_dir: str | Path = "results",
        data_dir: str | Path | None = None, retry_failed: bool = False,
        executor: ExecutorSettings | None = None, *, on_event: Event | None = None,
        trust_remote_code: bool = False,
        max_trainable_params: int | str | None = None) -> MatrixResult:
    """Run every cell that has no record yet (peft_arena.matrix.execute.run_matrix).

    `on_event(kind, index, total, outcome)` sees each cell start and end; cells with more
    trainable parameters than `max_trainable_params` (a count or '1M', '500K') are skipped as
    over budget. Each cell's tracker is checked once here, not once per cell process."""
    from peft_arena.matrix.budget import parse_parameter_count
    from peft_arena.matrix.execute import run_matrix
    from peft_arena.train.trackers import check_available

    most_trainable = parse_parameter_count(max_trainable_params)
    for name in {c.tracker for c in cells}:
        check_available(name)
    return run_matrix(cells, results_dir, data_dir, retry_failed=retry_failed,
                      on_event=on_event, trust_remote_code=trust_remote_code,
                      max_trainable_params=most_trainable, executor=executor)


# ---------------------------------------------------------------- one request per command


@dataclass
class MatrixRequest:
    """Which cells: unset fields come from the preset. `flags` are settings for every cell
    (epochs, precision, ...; None: the preset's), `sets` KEY=VALUE overrides."""

    tasks: list[str] | None = None
    strategies: list[str] | None = None
    model: str | None = None
    preset: str = DEFAULT_PRESET
    seeds: list[int] | None = None
    sets: list[str] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[CellSpec]:
        return plan_cells(self.tasks, self.strategies, model=self.model, preset=self.preset,
                          seeds=self.seeds, sets=self.sets, flags=self.flags)


@dataclass
class RunRequest:
    """`peft-arena run`: the cells, where they run and what the run may do."""

    matrix: MatrixRequest = field(default_factory=MatrixRequest)
    results_dir: str | Path = "results"
    data_dir: str | Path | None = None
    retry_failed: bool = False
    trust_remote_code: bool = False
    max_trainable_params: int | str | None = None
    # Executor overrides of the preset's `executor:` section (None: the preset's).
    executor_name: str | None = None
    workers: int | None = None
    ray_address: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    # The equal-budget search: every strategy's N trials on the validation split, then its
    # best settings on the test split (matrix/search.py); None: the defaults only.
    tune_trials: int | None = None

    def executor(self) -> ExecutorSettings:
        return executor_settings(self.matrix.preset, name=self.executor_name,
                                 workers=self.workers, ray_address=self.ray_address,
                                 slurm={k: v for k, v in self.slurm.items() if v is not None})


@dataclass
class Planned:
    """What a run would do, shown before it starts (and all a dry run does)."""

    cells: list[CellSpec]
    executor: ExecutorSettings
    results_dir: str | Path


@dataclass
class DryRun:
    """The cells with their parameter counts and memory estimates; nothing is trained."""

    cells: list[CellSpec]
    counts: list[ParameterCount]
    estimates: list[MemoryEstimate]


def dry_run(request: RunRequest) -> DryRun:
    from peft_arena.matrix.budget import parse_parameter_count

    cells = request.matrix.cells()
    # Bad settings fail a dry run as they would fail the run.
    parse_parameter_count(request.max_trainable_params)
    request.executor()
    return DryRun(cells, plan_parameters(cells, request.data_dir),
                  plan_memory(cells, request.data_dir))


def run_request(request: RunRequest, *, on_event: Event | None = None,
                on_start: Callable[[Planned], None] | None = None) -> MatrixResult:
    """Plan the request's cells and run them; `on_start` sees the plan before any cell."""
    from peft_arena.matrix.budget import parse_parameter_count
    from peft_arena.train.trackers import check_available

    cells = request.matrix.cells()
    parse_parameter_count(request.max_trainable_params)  # before on_start, as any bad input
    executor = request.executor()
    for name in {c.tracker for c in cells}:
        check_available(name)  # before on_start: a missing tracker says so before any output
    if request.tune_trials is not None and request.tune_trials < 1:
        raise UserError("--tune-trials must be >= 1 (the number of trials each strategy gets).")
    if on_start is not None:
        on_start(Planned(cells, executor, request.results_dir))
    if request.tune_trials is None:
        return run(cells, request.results_dir, request.data_dir, request.retry_failed,
                   executor, on_event=on_event, trust_remote_code=request.trust_remote_code,
                   max_trainable_params=request.max_trainable_params)
    from peft_arena.matrix.search import run_tuned_matrix

    tuned = run_tuned_matrix(
        cells, request.results_dir, request.tune_trials, data_dir=request.data_dir,
        retry_failed=request.retry_failed, executor=executor, on_event=on_event,
        trust_remote_code=request.trust_remote_code,
        max_trainable_params=parse_parameter_count(request.max_trainable_params))
    return tuned.combined()


def strategy_infos() -> list[dict[str, Any]]:
    from peft_arena.strategies import applicability, load_strategies

    registry = load_strategies()
    infos = []
    for name in registry.names():
        strategy = registry.get(name)
        learning_rate = strategy.train_defaults.get("learning_rate",
                                                    CellSpec.__dataclass_fields__[
                                                        "learning_rate"].default)
        peft = ", ".join(f"{k}={v}" for k, v in strategy.peft_defaults.items() if v is not None)
        infos.append({"name": name, "summary": strategy.summary, "learning_rate": learning_rate,
                      "peft_defaults": peft or "-",
                      "peft_type": (strategy.peft_config_class.__name__.removesuffix("Config")
                                    if strategy.peft_config_class else None),
                      "families": applicability.families(strategy),
                      "does_not_apply": dict(strategy.unsupported)})
    return infos


def inapplicable_infos() -> list[dict[str, Any]]:
    """PEFT methods that wrap no sequence classifier, and strategies that skip a family."""
    from peft_arena.strategies import applicability, load_strategies

    infos: list[dict[str, Any]] = [{"name": name, "families": [], "reason": reason}
                                   for name, reason in applicability.NOT_STRATEGIES.items()]
    registry = load_strategies()
    for name in registry.names():
        for family, reason in registry.get(name).unsupported.items():
            infos.append({"name": name, "families": [family], "reason": reason})
    return infos


def task_infos() -> list[dict[str, Any]]:
    infos = []
    for name in builtin_tasks().names():
        task = builtin_tasks().get(name)
        infos.append({"name": name, "kind": task.kind, "labels": len(task.labels or ()),
                      "max_length": task.max_length,
                      "hub": task.hub.path if task.hub else "-"})
    return infos


def preset_names() -> list[str]:
    return available_presets()


def markdown_table(headers: list[str], rows: list[Any]) -> list[str]:
    """Rows of a markdown table (peft_arena.report.markdown)."""
    from peft_arena.report.markdown import table

    return table(headers, rows)


def summary_table(summary: Any) -> Any:
    """The report's summary as a rich Table, for a terminal."""
    from peft_arena.report.build import rich_table

    return rich_table(summary)


def model_label(model: str) -> str:
    """A model setting as the report names it (an alias, a folder's name)."""
    from peft_arena.report.results import model_label as label

    return label(model)


def precision_name(requested: str) -> str:
    """What a cell's precision setting means on this machine ("auto" resolved)."""
    from peft_arena.train.precision import resolve_precision

    return resolve_precision(requested).name


@dataclass
class Listing:
    strategies: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    presets: list[str]
    does_not_apply: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """What `peft-arena list --json` prints."""
        return {"strategies": self.strategies, "tasks": self.tasks, "presets": self.presets,
                "does_not_apply": self.does_not_apply}


def listing() -> Listing:
    """`peft-arena list`: the strategies (with the model families each applies to) and tasks
    with their defaults, the presets, and the methods that do not apply with the reason."""
    return Listing(strategy_infos(), task_infos(), preset_names(), inapplicable_infos())


@dataclass
class ReportRequest:
    results_dir: str | Path = "results"
    out_dir: str | Path | None = None
    confusion: bool = False
    chart_links: bool = True


def report(request: ReportRequest) -> ReportResult:
    """Write the leaderboard, report.html, CSVs and charts (peft_arena.report.build)."""
    from peft_arena.report.build import build_report

    return build_report(Path(request.results_dir),
                        Path(request.out_dir) if request.out_dir else None,
                        confusion=request.confusion, chart_links=request.chart_links)


@dataclass
class CompareRequest:
    base: str | Path
    head: str | Path
    accuracy: float = 0.01  # largest drops and rises that are not regressions
    macro_f1: float = 0.01
    time: float = 0.2
    memory: float = 0.1
    out_file: str | Path | None = None  # also write the comparison as markdown


@dataclass
class Compared:
    comparison: Comparison
    table: Any  # a rich Table of the cells
    written: Path | None  # the markdown file, when asked for


def compare(request: CompareRequest) -> Compared:
    from peft_arena.report import compare as comparing

    thresholds = comparing.Thresholds(accuracy=request.accuracy, macro_f1=request.macro_f1,
                                      time=request.time, memory=request.memory)
    comparison = comparing.compare(Path(request.base), Path(request.head), thresholds)
    written = None
    if request.out_file:
        written = Path(request.out_file)
        written.write_text(comparing.to_markdown(comparison), encoding="utf-8")
    return Compared(comparison, comparing.to_rich(comparison), written)


@dataclass
class ExportRequest:
    record: str | Path
    out_dir: str | Path
    merge: bool = False


def export(request: ExportRequest) -> str:
    """Export a cell's saved weights; returns the kind written (adapter or merged)."""
    from peft_arena.tools.export import export_model

    return export_model(request.record, request.out_dir, merge=request.merge)


@dataclass
class PredictRequest:
    model_dir: str | Path
    input_file: str | Path
    out_file: str | Path
    text_column: str = "text"
    id_column: str | None = None
    with_names: bool = False
    batch_size: int = 128


def predict(request: PredictRequest) -> Predictions:
    from peft_arena.tools.predict import predict_file

    return predict_file(request.model_dir, request.input_file, request.out_file,
                        text_column=request.text_column, id_column=request.id_column,
                        with_names=request.with_names, batch_size=request.batch_size)


@dataclass
class TuneRequest:
    """`peft-arena tune`: one task and strategy; `storage` and `out_file` default to
    RESULTS/tune/<task>-<strategy>.db and .yaml."""

    task: str
    strategy: str
    trials: int = 20
    model: str | None = None
    preset: str = DEFAULT_PRESET
    seed: int = 0
    flags: dict[str, Any] = field(default_factory=dict)  # fixed settings, not searched
    sets: list[str] = field(default_factory=list)  # fixed KEY=VALUE settings
    data_dir: str | Path | None = None
    results_dir: str | Path = "results"
    storage: str | None = None
    study_name: str | None = None
    objective: str = "accuracy"
    out_file: str | None = None


@dataclass
class TuneStart:
    base: CellSpec
    trials: int
    storage: str


def tune(request: TuneRequest, *, on_trial: Callable[[TrialRow], None] | None = None,
         on_start: Callable[[TuneStart], None] | None = None) -> TuneResult:
    """Search the strategy's settings on validation accuracy and write the best as a preset
    (peft_arena.tools.tune)."""
    from peft_arena.tools import tune as tuning

    objectives = tuning.parse_objectives(request.objective)
    [base] = plan_cells([request.task], [request.strategy], model=request.model,
                        preset=request.preset, seeds=[request.seed], sets=request.sets,
                        flags=request.flags)
    storage, out_file = tuning.study_files(request.results_dir, base, request.storage,
                                           request.out_file)
    if on_start is not None:
        on_start(TuneStart(base, request.trials, storage))
    return tuning.tune(base, request.trials,
                       fixed=tuning.fixed_settings(base.strategy, request.flags, request.sets),
                       storage=storage, preset_file=out_file, data_dir=request.data_dir,
                       study_name=request.study_name, objectives=objectives,
                       on_trial=on_trial)


__all__ = [
    "EARLY_STOPPING_METRICS", "PRECISIONS", "TRACKERS", "CompareRequest", "DryRun",
    "ExportRequest", "MatrixRequest", "Planned", "PredictRequest", "ReportRequest",
    "RunRequest", "TuneRequest", "compare", "dry_run", "executor_settings", "export",
    "listing", "markdown_table", "model_label", "plan_cells", "plan_memory",
    "plan_parameters", "precision_name", "predict", "report", "run",
    "run_request", "summary_table", "tune",
]
