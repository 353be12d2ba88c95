"""One cell in steps: set up -> data -> model -> train -> [save] -> test -> measure -> record.

Each step is a method of `Cell` that opens the phase of the same name on the cell's timer and
makes one call into the package that owns the work: cell.setup, data (and train.inputs for
the batches), train.build, train.loop, model.saving, measure; the record's sections are
assembled by cell.sections. Two entry points compose them: `run_cell` (every step; an ok
record) and `train_cell` (up to training; what a hyper-parameter search needs, which must
never look at the test split).

The runner knows the `Strategy` interface only; it never asks which strategy it runs. It is
meant to run in a process of its own (see matrix.execute) so that peak memory is the cell's.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_arena.cell import sections
from peft_arena.cell.retention_step import Retained, measure_retention
from peft_arena.cell.setup import Setup, set_up
from peft_arena.common import progress
from peft_arena.config.spec import CellSpec
from peft_arena.config.tasks import resolve_task
from peft_arena.data.loading import load_cell_data
from peft_arena.measure.estimate_check import baseline_rss
from peft_arena.measure.flops import compute_report, trained_sum_squared_lengths
from peft_arena.measure.memory import memory_report, saved_size_bytes, weights_bytes
from peft_arena.measure.memory_timeline import MemoryTimeline
from peft_arena.measure.provenance import environment
from peft_arena.measure.timing import PhaseTimer
from peft_arena.model.compiling import CompileOutcome, compiled_for_training
from peft_arena.model.frozen_weights import frozen_linear_weights_in
from peft_arena.model.loading import load_tokenizer
from peft_arena.model.saving import save_trained_model, saved_model_dir
from peft_arena.records import builders
from peft_arena.records.schema import Metrics, Record
from peft_arena.train import distributed
from peft_arena.train.build import Built, build_for_training
from peft_arena.train.inputs import Inputs, build_inputs
from peft_arena.train.loop import (
    CLASSIFICATION_HOOKS,
    EvalCallback,
    EvalResult,
    TaskHooks,
    TrainResult,
    evaluate,
    train_epochs,
)
from peft_arena.train.memory_tools import BatchPlan, FallbackLog, run_with_batch_fallback


@dataclass
class Measured:
    adapter_bytes: int
    weights_bytes: int
    compute: dict[str, Any]
    memory_tools: dict[str, Any]  # made here: the estimate takes time the phases must count


@dataclass
class TrainingOutcome:
    """What `train_cell` returns: training and validation only."""

    spec: CellSpec
    result: TrainResult
    trainable: int
    total: int
    total_s: float
    phases: dict[str, float]

    @property
    def val_accuracy(self) -> float | None:
        return sections.val_metrics(self.result)["val_accuracy"]

    @property
    def train_s(self) -> float:
        return self.phases["train_s"]

    def record(self) -> Record:
        return builders.partial_record(
            self.spec, metrics=sections.val_metrics(self.result),
            params={"trainable": self.trainable, "total": self.total},
            time={"total_s": self.total_s, "phases": self.phases},
            history=self.result.history, best_step=self.result.best_step,
            stopped_early=self.result.stopped_early)


class Cell:
    """The steps of one cell. Exceptions propagate, and `timer.current` then names the phase
    that failed. `trust_remote_code` lets the model run its own Python code (the user's
    explicit `--trust-remote-code` only). `results_dir` is where `spec.save_model` and a
    TensorBoard tracker write; `on_evaluate` sees every validation pass."""

    def __init__(self, spec: CellSpec, data_dir: str | Path | None = None, *,
                 timer: PhaseTimer | None = None, results_dir: Path | None = None,
                 on_evaluate: EvalCallback | None = None,
                 trust_remote_code: bool = False) -> None:
        self.spec, self.data_dir, self.results_dir = spec, data_dir, results_dir
        self.timer = timer or PhaseTimer()
        self.on_evaluate, self.trust_remote_code = on_evaluate, trust_remote_code
        self.fallback = FallbackLog()  # the batch splits tried, and the one that trained
        self.rss_baseline: dict[str, int | None] = {}  # set at the end of setup
        self.compiled: CompileOutcome | None = None  # what training ran: compiled or eager

    # ------------------------------------------------------------------ steps

    def set_up(self) -> Setup:
        started_at = builders.utc_now()
        with self.timer.phase("setup"):
            setup = set_up(self.spec, self.results_dir, started_at)
            self.rss_baseline = baseline_rss()  # measure.estimate_check: imports and setup
        return setup

    def load_data(self, *, data_hygiene: bool = True) -> Inputs:
        spec = self.spec
        with self.timer.phase("data"), progress.status(f"loading {spec.task} data"):
            data = load_cell_data(spec, self.data_dir, data_hygiene=data_hygiene)
        with self.timer.phase("tokenize"), progress.status("tokenizing"):
            tokenizer = load_tokenizer(spec.model, trust_remote_code=self.trust_remote_code)
            return build_inputs(spec, data, tokenizer)

    def build_model(self, setup: Setup, inputs: Inputs, plan: BatchPlan | None = None) -> Built:
        """`plan`: the batch split to train with (default: the spec's)."""
        plan = plan or BatchPlan(self.spec.batch_size, self.spec.gradient_accumulation_steps)
        with self.timer.phase("model"):
            return build_for_training(self.spec, setup.strategy, setup.accelerator, inputs,
                                      plan, precision=setup.precision,
                                      trust_remote_code=self.trust_remote_code,
                                      timer=self.timer)

    def train(self, setup: Setup, inputs: Inputs, built: Built) -> TrainResult:
        """Compiling (model.compiling) is timed as its own phase, before the first step."""
        with (self.timer.phase("train"),
              frozen_linear_weights_in(built.model, setup.precision.compute_dtype),
              compiled_for_training(
                  setup.accelerator.unwrap_model(built.model), self.spec.compile,
                  on_gpu=setup.on_gpu, compute_dtype=setup.precision.compute_dtype,
                  gradient_checkpointing=self.spec.gradient_checkpointing,
                  timer_phase=lambda: self.timer.phase("compile")) as compiled):
            self.compiled = compiled
            trained = train_epochs(built.model, setup.strategy, built.optimizer,
                                   built.scheduler, built.loaders["train"],
                                   built.loaders["val"], setup.accelerator, self.spec,
                                   inputs.total_steps, self.on_evaluate, timer=self.timer,
                                   hooks=self.hooks(setup, inputs))
        # The whole cell's work, over every rank of a multi-device cell.
        trained.samples, trained.tokens = distributed.sum_over_ranks(
            setup.accelerator, trained.samples, trained.tokens)
        return trained

    def hooks(self, setup: Setup, inputs: Inputs) -> TaskHooks:
        """The task kind's loss, batch counts and validation pass for the training loop."""
        return CLASSIFICATION_HOOKS

    def save(self, setup: Setup, inputs: Inputs, built: Built) -> Path | None:
        """The trained weights for `export`, when the spec asks and there is a results folder."""
        if not (self.spec.save_model and self.results_dir is not None):
            return None
        with self.timer.phase("save"):
            model_dir = saved_model_dir(self.results_dir, self.spec.cell_id)
            save_trained_model(setup.accelerator.unwrap_model(built.model), inputs.tokenizer,
                               self.spec, inputs.label_names, model_dir)
        return model_dir

    def test(self, setup: Setup, built: Built) -> EvalResult:
        with self.timer.phase("eval"):
            tested = evaluate(built.model, built.loaders["test"], setup.accelerator, "test")
            [tested.tokens] = distributed.sum_over_ranks(setup.accelerator, tested.tokens)
            return tested

    def measure(self, setup: Setup, inputs: Inputs, built: Built,
                trained: TrainResult) -> Measured:
        with self.timer.phase("measure"):
            final_model = setup.accelerator.unwrap_model(built.model)
            return Measured(
                saved_size_bytes(final_model), weights_bytes(final_model),
                distributed.scale_peak(compute_report(
                    final_model, train_tokens=trained.tokens,
                    sum_squared_lengths=trained_sum_squared_lengths(
                        inputs.splits["train"].lengths, trained.samples),
                    train_sequences=trained.samples, batch_size=self.spec.batch_size,
                    train_seconds=self.timer.phases["train_s"],
                    device=setup.accelerator.device, dtype=setup.precision.compute_dtype),
                    setup.accelerator.num_processes),
                sections.memory_tools(self.spec, setup, inputs, built, self.fallback,
                                      trust_remote_code=self.trust_remote_code))

    def retain(self, setup: Setup, inputs: Inputs, built: Built) -> Retained:
        """Retention of the base model and the weight update (cell.retention_step), on the
        main process only, unless the spec turns them off."""
        if not self.spec.measure_retention or not distributed.is_main_process():
            return Retained(None, None)
        with self.timer.phase("retention"), progress.status("measuring retention"):
            return measure_retention(
                self.spec, setup.accelerator.unwrap_model(built.model),
                tokenizer=inputs.tokenizer, label_names=inputs.label_names,
                pad_id=inputs.pad_id, data_dir=self.data_dir,
                is_peft=setup.strategy.peft_config_class is not None,
                precision_name=setup.precision.name,
                trust_remote_code=self.trust_remote_code)

    def metrics(self, inputs: Inputs, trained: TrainResult, tested: EvalResult) -> Metrics:
        """The record's metrics section (cell.sections; a task kind may score otherwise)."""
        return sections.metrics(inputs, trained, tested)

    # ------------------------------------------------------------------ entry points

    def _up_to_training(self, setup: Setup, *, data_hygiene: bool = True
                        ) -> tuple[Inputs, Built, TrainResult]:
        inputs = self.load_data(data_hygiene=data_hygiene)

        def build_and_train(plan: BatchPlan) -> tuple[Built, TrainResult]:
            with self.timer.phase("model"):  # a full garbage collection: not free
                setup.accelerator.free_memory()  # what a try that ran out of memory had prepared
            built = self.build_model(setup, inputs, plan)
            return built, self.train(setup, inputs, built)

        # Only CUDA reports running out of memory as an error one can recover from; on CPU
        # the kernel ends the process.
        built, trained = run_with_batch_fallback(
            build_and_train, BatchPlan(self.spec.batch_size,
                                       self.spec.gradient_accumulation_steps),
            enabled=setup.on_gpu, log=self.fallback)
        return inputs, built, trained

    def train_only(self) -> TrainingOutcome:
        setup = self.set_up()
        with setup.poller or nullcontext():
            # No record is written, so no data-hygiene counts (they cost about a load).
            _, built, trained = self._up_to_training(setup, data_hygiene=False)
        return TrainingOutcome(self.spec, trained, built.trainable, built.total,
                               self.timer.total(), self.timer.phases)

    def run(self) -> Record:
        setup = self.set_up()
        timeline = MemoryTimeline(self.timer, poller=setup.poller)
        with setup.poller or nullcontext(), timeline:
            inputs, built, trained = self._up_to_training(setup)
            model_dir = self.save(setup, inputs, built)
            tested = self.test(setup, built)
            measured = self.measure(setup, inputs, built, trained)
        memory = memory_report(setup.poller, measured.weights_bytes)  # last: a lifetime peak
        rank_peaks = distributed.per_rank(setup.accelerator, memory["peak_bytes"])
        if len(rank_peaks) > 1 and any(p is not None for p in rank_peaks):
            memory["peak_bytes"] = max(p for p in rank_peaks if p is not None)
        # After the peak is read: the base model it may load is the measurement's, not the
        # cell's, and only the first cell of a model loads it (the rest read the cache).
        retained = self.retain(setup, inputs, built)
        timeline_report = timeline.report()
        # Provenance asks git and the package metadata, which can take a noticeable part of a
        # second on a fresh checkout: timed with the measurements, so the phases add up.
        with self.timer.phase("measure"):
            provenance = environment(setup.precision.name)
            strategy_state = setup.strategy.final_state(
                setup.accelerator.unwrap_model(built.model))
        record = builders.ok_record(
            self.spec, resolved=sections.resolved(self.spec, setup, inputs, built,
                                                  trust_remote_code=self.trust_remote_code,
                                                  compiled=self.compiled),
            data_hygiene=inputs.data_hygiene or {},
            metrics=self.metrics(inputs, trained, tested),
            params={"trainable": built.trainable, "total": built.total,
                    "trainable_pct": 100.0 * built.trainable / built.total,
                    "adapter_bytes": measured.adapter_bytes},
            time=sections.times(self.timer, trained, tested),
            memory={**memory, "batch_size": self.spec.batch_size,
                    "max_length": self.spec.max_length, **self.rss_baseline,
                    "timeline": timeline_report},
            memory_tools=sections.with_estimate_check(
                measured.memory_tools, {**memory, "timeline": timeline_report}, rank_peaks,
                self.rss_baseline),
            compute=measured.compute, history=trained.history, best_step=trained.best_step,
            stopped_early=trained.stopped_early,
            strategy_state=strategy_state,
            artifacts={"model_dir": str(model_dir.relative_to(self.results_dir))
                       if model_dir and self.results_dir else None},
            predictions=sections.predictions_in_order(tested, inputs.test_batches),
            environment=provenance, started_at=setup.started_at,
            execution=distributed.execution_section(setup.accelerator, rank_peaks,
                                                    provenance["hardware"],
                                                    setup.precision.name),
            retention=retained.retention, weight_update=retained.weight_update)
        setup.accelerator.log({"test_accuracy": tested.accuracy, "test_macro_f1": tested.macro_f1,
                               "test_loss": tested.loss},
                              step=trained.history[-1]["step"] if trained.history else 0)
        setup.accelerator.end_training()
        return record


# The steps of each task kind: `Cell` for classification; the package's __init__ imports
# cell.generative, which adds its `GenerativeCell` for "generation".
CELL_KINDS: dict[str, type[Cell]] = {"classification": Cell}


def cell_class(spec: CellSpec) -> type[Cell]:
    """The steps for the kind of the cell's task."""
    return CELL_KINDS[resolve_task(spec.task_source).kind]
