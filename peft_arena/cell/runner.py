"""One cell in steps: set up -> data -> model -> train -> [save] -> test -> measure -> record.

Each step is a method of `Cell` that returns a small dataclass, and opens the phase of the
same name on the cell's timer. Two entry points compose them: `run_cell` (every step; an ok
record) and `train_cell` (up to training; what a hyper-parameter search needs, which must
never look at the test split).

The runner knows the `Strategy` interface only; it never asks which strategy it runs. It is
meant to run in a process of its own (see matrix.execute) so that peak memory is the cell's.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from peft_arena import progress
from peft_arena.architecture.adapters import upcast_trainable
from peft_arena.cell import distributed, trackers
from peft_arena.cell.batching import (
    Collator,
    IndexDataset,
    LengthGroupedBatchSampler,
    TokenizedSplit,
    evaluation_token_budget,
    sorted_batches,
    tokenize,
)
from peft_arena.cell.data import load_cell_data
from peft_arena.cell.dropout import use_fast_dropout
from peft_arena.cell.first_token import compute_last_layer_for_first_token
from peft_arena.cell.four_bit import kernel_note
from peft_arena.cell.frozen_weights import frozen_linear_weights_in
from peft_arena.cell.last_token import compute_last_layer_for_last_token
from peft_arena.cell.loop import (
    EvalCallback,
    EvalResult,
    TrainResult,
    evaluate,
    optimizer_steps_per_epoch,
    train_epochs,
)
from peft_arena.cell.memory_estimate import estimate_cell_memory
from peft_arena.cell.memory_tools import (
    BatchPlan,
    FallbackLog,
    base_dtype,
    enable_gradient_checkpointing,
    run_with_batch_fallback,
)
from peft_arena.cell.modeling import load_model, load_tokenizer
from peft_arena.cell.optim import build_optimizer
from peft_arena.cell.precision import Precision, resolve_precision
from peft_arena.cell.retention_step import Retained, measure_retention
from peft_arena.cell.saving import save_trained_model, saved_model_dir
from peft_arena.config.gguf_source import model_source
from peft_arena.config.presets import resolve_model_path
from peft_arena.config.spec import CellSpec
from peft_arena.measure.estimate_check import baseline_rss, cpu_estimate_check
from peft_arena.measure.flops import compute_report, trained_sum_squared_lengths
from peft_arena.measure.memory import (
    GpuMemoryPoller,
    memory_report,
    saved_size_bytes,
    weights_bytes,
)
from peft_arena.measure.memory_timeline import MemoryTimeline
from peft_arena.measure.metrics import per_class_f1
from peft_arena.measure.params import count_parameters, parameter_numel
from peft_arena.measure.provenance import environment
from peft_arena.measure.timing import PhaseTimer
from peft_arena.records import builders
from peft_arena.records.schema import (
    DataHygiene,
    Metrics,
    Predictions,
    Record,
    Resolved,
    Time,
)
from peft_arena.records.store import results_dir_of, write_record
from peft_arena.strategies import Strategy, load_strategies

SPLITS = ("train", "val", "test")


@dataclass
class Setup:
    started_at: str
    precision: Precision
    poller: GpuMemoryPoller | None  # GPU memory, polled while the cell runs
    accelerator: Accelerator
    strategy: Strategy

    @property
    def on_gpu(self) -> bool:
        return self.accelerator.device.type == "cuda"


@dataclass
class Inputs:
    """The cell's data, tokenized and batched."""

    label_names: list[str]
    splits: dict[str, TokenizedSplit]  # train, val, test
    cache_hits: list[str]  # splits whose token ids came from the cache
    tokenizer: Any
    loaders: dict[str, DataLoader]
    test_batches: list[list[int]]  # the test split's order of evaluation
    total_steps: int  # optimizer steps: the same for every split of the effective batch
    pad_id: int
    data_hygiene: DataHygiene | None  # None for a training-only cell


@dataclass
class Built:
    """The model ready to train, with its optimizer and schedule (all prepared by Accelerate)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loaders: dict[str, DataLoader]
    trainable: int
    total: int


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
        return _val_metrics(self.result)["val_accuracy"]

    @property
    def train_s(self) -> float:
        return self.phases["train_s"]

    def record(self) -> Record:
        return builders.partial_record(
            self.spec, metrics=_val_metrics(self.result),
            params={"trainable": self.trainable, "total": self.total},
            time={"total_s": self.total_s, "phases": self.phases},
            history=self.result.history, best_step=self.result.best_step,
            stopped_early=self.result.stopped_early)


def _loader(split: TokenizedSplit, pad_id: int, batch_sampler: Any) -> DataLoader:
    return DataLoader(IndexDataset(len(split)), batch_sampler=batch_sampler,
                      collate_fn=Collator(split, pad_id))


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

    # ------------------------------------------------------------------ steps

    def set_up(self) -> Setup:
        spec = self.spec
        started_at = builders.utc_now()
        with self.timer.phase("setup"):
            precision = resolve_precision(spec.precision)
            # Created before anything allocates on the GPU, so that its baseline shows other
            # processes only.
            poller = GpuMemoryPoller.for_torch_device(0) if torch.cuda.is_available() else None
            # Accelerate keeps one state per process and refuses a second precision in it; a
            # process running several cells (the Python API, `tune`) starts each one afresh.
            AcceleratorState._reset_state()
            accelerator = Accelerator(mixed_precision=precision.accelerate_name,
                                      cpu=not torch.cuda.is_available(),
                                      dataloader_config=distributed.dataloader_config(),
                                      **trackers.accelerator_kwargs(spec, self.results_dir))
            trackers.start(accelerator, spec)
            strategy = load_strategies().get(spec.strategy)(spec)
            self.rss_baseline = baseline_rss()  # measure.estimate_check: imports and setup
        return Setup(started_at, precision, poller, accelerator, strategy)

    def load_data(self, *, data_hygiene: bool = True) -> Inputs:
        spec = self.spec
        with self.timer.phase("data"), progress.status(f"loading {spec.task} data"):
            data = load_cell_data(spec, self.data_dir, data_hygiene=data_hygiene)
        with self.timer.phase("tokenize"), progress.status("tokenizing"):
            tokenizer = load_tokenizer(spec.model, trust_remote_code=self.trust_remote_code)
            tokenized = {name: tokenize(split.texts, split.labels, tokenizer, spec.max_length)
                         for name, split in zip(SPLITS, (data.train, data.val, data.test),
                                                strict=True)}
            splits = {name: split for name, (split, _) in tokenized.items()}
            pad_id = tokenizer.pad_token_id or 0
            test_batches = self._evaluation_batches(splits["test"].lengths)
            loaders = {
                "train": _loader(splits["train"], pad_id, LengthGroupedBatchSampler(
                    splits["train"].lengths, spec.batch_size, spec.seed)),
                "val": _loader(splits["val"], pad_id, distributed.SizedBatches(
                    self._evaluation_batches(splits["val"].lengths),
                    spec.eval_batch_size)),
                "test": _loader(splits["test"], pad_id, distributed.SizedBatches(
                    test_batches, spec.eval_batch_size)),
            }
            total_steps = max(1, math.ceil(optimizer_steps_per_epoch(
                len(loaders["train"]), spec.gradient_accumulation_steps) * spec.epochs))
        return Inputs(data.label_names, splits,
                      [name for name, (_, hit) in tokenized.items() if hit], tokenizer,
                      loaders, test_batches, total_steps, pad_id, data.hygiene)

    def _evaluation_batches(self, lengths) -> list[list[int]]:
        """Sorted batches, capped in padded tokens on one device. Accelerate splits every
        batch of a multi-device cell into equal shares, so there they keep one size."""
        size = self.spec.eval_batch_size
        budget = (evaluation_token_budget(lengths, size) if (self.spec.devices_per_cell or 1) == 1
                  else None)
        return sorted_batches(lengths, size, budget)

    def build_model(self, setup: Setup, inputs: Inputs, plan: BatchPlan | None = None) -> Built:
        """`plan`: the batch split to train with (default: the spec's)."""
        spec = self.spec
        plan = plan or BatchPlan(spec.batch_size, spec.gradient_accumulation_steps)
        setup.accelerator.gradient_accumulation_steps = plan.accumulation_steps
        loaders = dict(inputs.loaders)
        if plan.batch_size != spec.batch_size:
            loaders["train"] = _loader(inputs.splits["train"], inputs.pad_id,
                                       LengthGroupedBatchSampler(
                                           inputs.splits["train"].lengths, plan.batch_size,
                                           spec.seed))
        with self.timer.phase("model"):
            model = self._model_to_train(setup, inputs)
            trainable, total = count_parameters(model)
            optimizer = (setup.strategy.optimizer(model, spec.learning_rate, spec.weight_decay,
                                                  spec.head_learning_rate)
                         or build_optimizer(model, spec.learning_rate, spec.weight_decay,
                                            spec.head_learning_rate))
            scheduler = get_scheduler(spec.lr_scheduler, optimizer,
                                      num_warmup_steps=int(spec.warmup_ratio
                                                           * inputs.total_steps),
                                      num_training_steps=inputs.total_steps)
            model, optimizer, train, val, test, scheduler = setup.accelerator.prepare(
                model, optimizer, loaders["train"], loaders["val"], loaders["test"], scheduler)
        return Built(model, optimizer, scheduler, {"train": train, "val": val, "test": test},
                     trainable, total)

    def _model_to_train(self, setup: Setup, inputs: Inputs) -> torch.nn.Module:
        """The loaded model, with the memory tools the spec asks for, wrapped by its strategy:
        a frozen base in bf16 in bf16 runs, trainable weights in fp32."""
        spec, strategy = self.spec, setup.strategy
        set_seed(spec.seed)  # before the head and the adapters draw their initial weights
        model = load_model(spec.model, inputs.label_names, on_gpu=setup.on_gpu,
                           trust_remote_code=self.trust_remote_code,
                           dtype=base_dtype(strategy.peft_config_class is not None,
                                            setup.precision.name),
                           pad_token_id=inputs.pad_id,
                           **strategy.load_kwargs(setup.precision.compute_dtype))
        if spec.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        model = strategy.wrap(model, inputs.total_steps)
        if strategy.prepares:  # a pass of the method's own (EVA's statistics, PiSSA's SVD)
            with self.timer.phase("prepare"), progress.status("preparing the adapters"):
                model = strategy.prepare(model, inputs.loaders["train"])
        upcast_trainable(model)
        if not setup.on_gpu:
            use_fast_dropout(model)
        compute_last_layer_for_first_token(model) or compute_last_layer_for_last_token(model)
        return model

    def train(self, setup: Setup, inputs: Inputs, built: Built) -> TrainResult:
        with (self.timer.phase("train"),
              frozen_linear_weights_in(built.model, setup.precision.compute_dtype)):
            trained = train_epochs(built.model, setup.strategy, built.optimizer,
                                   built.scheduler, built.loaders["train"],
                                   built.loaders["val"], setup.accelerator, self.spec,
                                   inputs.total_steps, self.on_evaluate, timer=self.timer)
        # The whole cell's work, over every rank of a multi-device cell.
        trained.samples, trained.tokens = distributed.sum_over_ranks(
            setup.accelerator, trained.samples, trained.tokens)
        return trained

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
                self._memory_tools(setup, inputs, built))

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
        # Provenance asks git and the package metadata, which can take a noticeable part of a
        # second on a fresh checkout: timed with the measurements, so the phases add up.
        with self.timer.phase("measure"):
            provenance = environment(setup.precision.name)
            strategy_state = setup.strategy.final_state(
                setup.accelerator.unwrap_model(built.model))
        memory_tools = {**measured.memory_tools, "estimate_check": cpu_estimate_check(
            measured.memory_tools["estimate"]["total_bytes"], memory["peak_bytes"],
            self.rss_baseline.get("baseline_rss_bytes"))
            if memory.get("source") == "cpu_rss" and len(rank_peaks) <= 1 else None}
        record = builders.ok_record(
            self.spec, resolved=self._resolved(setup, inputs, built),
            data_hygiene=inputs.data_hygiene or {},
            metrics=self._metrics(inputs, trained, tested),
            params={"trainable": built.trainable, "total": built.total,
                    "trainable_pct": 100.0 * built.trainable / built.total,
                    "adapter_bytes": measured.adapter_bytes},
            time=self._time(trained, tested),
            memory={**memory, "batch_size": self.spec.batch_size,
                    "max_length": self.spec.max_length, **self.rss_baseline,
                    "timeline": timeline.report()},
            memory_tools=memory_tools,
            compute=measured.compute, history=trained.history, best_step=trained.best_step,
            stopped_early=trained.stopped_early,
            strategy_state=strategy_state,
            artifacts={"model_dir": str(model_dir.relative_to(self.results_dir))
                       if model_dir and self.results_dir else None},
            predictions=_test_predictions(tested, inputs.test_batches),
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

    # ------------------------------------------------------------------ record sections

    def _memory_tools(self, setup: Setup, inputs: Inputs, built: Built) -> dict[str, Any]:
        """How the cell's batch was split, what the frozen base was stored in, and the dry
        run's memory estimate beside the measured figures."""
        used = self.fallback.used
        assert used is not None
        model = setup.accelerator.unwrap_model(built.model)
        frozen = sorted({"nf4" if parameter_numel(p) != p.numel() else
                         str(p.dtype).removeprefix("torch.")
                         for p in model.parameters() if not p.requires_grad})
        estimate = estimate_cell_memory(self.spec, len(inputs.label_names),
                                        on_gpu=setup.on_gpu, batch_size=used.batch_size,
                                        trust_remote_code=self.trust_remote_code)
        return {"batch_size": used.batch_size,
                "gradient_accumulation_steps": used.accumulation_steps,
                "effective_batch_size": used.effective * setup.accelerator.num_processes,
                **self.fallback.to_dict(),
                "gradient_checkpointing": self.spec.gradient_checkpointing,
                "frozen_dtypes": frozen,
                "estimate": estimate.to_dict()}

    def _resolved(self, setup: Setup, inputs: Inputs, built: Built) -> Resolved:
        model = setup.accelerator.unwrap_model(built.model)
        splits = inputs.splits
        return {
            "model_path": str(getattr(built.model, "name_or_path", "")) or self.spec.model,
            "trust_remote_code": self.trust_remote_code,
            "peft_config": _peft_config(model),
            "precision": setup.precision.name,
            "attn_implementation": getattr(getattr(model, "config", None),
                                           "_attn_implementation", None),
            "train_examples": len(splits["train"]), "val_examples": len(splits["val"]),
            "test_examples": len(splits["test"]),
            "label_names": inputs.label_names,
            "total_steps": inputs.total_steps,
            "tokenize_cache_hits": inputs.cache_hits,
            "data_fingerprint": {name: splits[name].fingerprint() for name in SPLITS},
            **({"four_bit_kernel": note} if (note := kernel_note(
                model, setup.accelerator.device.type)) else {}),
            "model_source": model_source(resolve_model_path(self.spec.model)),
        }

    @staticmethod
    def _metrics(inputs: Inputs, trained: TrainResult, tested: EvalResult) -> Metrics:
        return {"accuracy": tested.accuracy, "macro_f1": tested.macro_f1,
                "eval_loss": tested.loss,
                # The pass whose weights were tested: the best one under early stopping.
                **_val_metrics(trained),
                "per_class_f1": per_class_f1(tested.y_true, tested.y_pred, inputs.label_names),
                "confidence": tested.confidence}

    def _time(self, trained: TrainResult, tested: EvalResult) -> Time:
        phases = self.timer.phases
        return {"total_s": self.timer.total(), "phases": phases,
                "train_samples_per_s": trained.samples / phases["train_s"],
                "train_tokens_per_s": trained.tokens / phases["train_s"],
                "eval_samples_per_s": tested.samples / phases["eval_s"],
                "eval_tokens_per_s": tested.tokens / phases["eval_s"]}


def run_cell(spec: CellSpec, data_dir: str | Path | None = None,
             timer: PhaseTimer | None = None, *, results_dir: Path | None = None,
             on_evaluate: EvalCallback | None = None,
             trust_remote_code: bool = False) -> Record:
    """Run every step of one cell and return its ok record (see `Cell`)."""
    return Cell(spec, data_dir, timer=timer, results_dir=results_dir, on_evaluate=on_evaluate,
                trust_remote_code=trust_remote_code).run()


def train_cell(spec: CellSpec, data_dir: str | Path | None = None, *,
               on_evaluate: EvalCallback | None = None) -> TrainingOutcome:
    """Train and validate one cell, never touching its test split (a search trial)."""
    return Cell(spec, data_dir, on_evaluate=on_evaluate).train_only()


def _val_metrics(trained: TrainResult) -> Metrics:
    final = trained.final or {}
    return {"val_accuracy": final.get("val_accuracy"), "val_macro_f1": final.get("val_macro_f1")}


def _peft_config(model: torch.nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return None
    data = config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()
            if k != "rank_pattern"}


def _test_predictions(result: EvalResult, batches: list[list[int]]) -> Predictions:
    """Test labels and predictions in the split's own order (evaluation runs sorted by
    length)."""
    order = np.concatenate(batches)
    restored = {}
    for name, values in (("y_true", result.y_true), ("y_pred", result.y_pred)):
        in_order = np.empty_like(values)
        in_order[order] = values
        restored[name] = in_order.tolist()
    return {"y_true": restored["y_true"], "y_pred": restored["y_pred"]}


def run_and_record(spec: CellSpec, record_file: Path, data_dir: str | Path | None, *,
                   timer: PhaseTimer | None = None, run_id: str | None = None,
                   trust_remote_code: bool = False, results_dir: Path | None = None) -> None:
    """Run a cell and write its record, ok or failed; a failure is re-raised after recording.

    `run_id` names the matrix run in the record, so that two runs sharing a results folder
    can be told apart. `results_dir` is where saved models and tracker logs go (default: the
    results folder of `record_file`). Of a cell over several processes, rank 0 writes.
    """
    timer = timer or PhaseTimer()
    write = write_record if distributed.is_main_process() else (lambda *_: None)
    try:
        record = run_cell(spec, data_dir, timer,
                          results_dir=results_dir or results_dir_of(record_file),
                          trust_remote_code=trust_remote_code)
    except Exception as exc:  # any failure becomes a failed record; the matrix goes on
        trackers.end_failed(spec.tracker)
        write(record_file, builders.failed_record(
            spec, builders.error_section(exc, timer.current), memory=memory_report(None),
            environment=environment(spec.precision), run_id=run_id))
        raise
    write(record_file, {**record, "run_id": run_id})
