"""The record: one JSON object per cell, section by section. This file is its only description.

Schema version 1. A record's `status` decides which sections hold data:

    ok       every section below, filled in (records.builders.ok_record)
    partial  a search trial, trained and validated but never tested: spec, metrics (val_*
             only), params (trainable, total), time (total_s, phases), history, best_step,
             stopped_early (records.builders.partial_record); kept by the search, never in a
             results folder
    failed   spec, error, memory, environment; metrics, params, time and compute are {},
             history is [], predictions is null (records.builders.failed_record)

Readers are tolerant: records written before a field existed lack it (`best_step`,
`stopped_early`, `artifacts`, `resolved`, `run_id`, `data_hygiene`, `retention` and
`weight_update` came after the first records), and a
field added later must stay optional to read. To add a field: declare it in its section
below, fill it in the section's builder, and read it with `.get` in the report. To add a
section (a concern of its own), add a TypedDict, a key in `Record` and a keyword argument of
`ok_record`. Bump SCHEMA_VERSION only when a field changes meaning; readers refuse newer ones.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

SCHEMA_VERSION = 1

Status = Literal["ok", "partial", "failed"]


class Metrics(TypedDict, total=False):
    """Test-split scores of the trained model, and the validation pass whose weights were
    tested (the best one under early stopping)."""

    accuracy: float
    macro_f1: float
    eval_loss: float
    val_accuracy: float | None
    val_macro_f1: float | None
    per_class_f1: dict[str, float]  # label name -> F1 on the test split
    confidence: dict[str, float]  # mean, share_above_0_9, ece (measure.metrics)
    # Generation tasks only: the share of test answers that name no label (counted wrong in
    # accuracy and macro F1), and the untuned model's accuracy, macro_f1 and invalid_share on
    # the same test split (the `generation` section says how both were measured).
    invalid_share: float | None
    zero_shot: dict[str, float | None]
    # Free-text generation tasks (`answer: text`): accuracy is the exact match (normalized
    # answers equal), macro_f1 is None, and chrF (sacrebleu's corpus chrF, 0-100) is kept too;
    # zero_shot then holds accuracy, exact_match and chrf.
    exact_match: float | None
    chrf: float | None


class Params(TypedDict, total=False):
    trainable: int
    total: int  # 4-bit weights counted as the unquantized values they hold
    trainable_pct: float
    # Bytes on disk of what save_pretrained writes: the adapter and head for PEFT, the whole
    # model for full fine-tuning.
    adapter_bytes: int


class Time(TypedDict, total=False):
    """Wall-clock seconds. `phases` are disjoint and sum to within a few percent of total_s:
    setup_s, data_s, tokenize_s, model_s, prepare_s (a strategy's pass before training, when
    it has one), compile_s (torch.compile before the first step, when compiled), train_s
    (validation passes excluded), validate_s,
    eval_s, measure_s, retention_s (when measured) and, when the model is saved, save_s;
    generation tasks add decode_s (greedy answers to the test split, inside eval's time
    otherwise) and zero_shot_s (the untuned model's answers, once per model and task).
    Tokens are real (non-padding)."""

    total_s: float  # from the cell's start; interpreter start-up and imports are not in it
    phases: dict[str, float]
    train_samples_per_s: float
    train_tokens_per_s: float
    eval_samples_per_s: float
    eval_tokens_per_s: float


class Memory(TypedDict, total=False):
    """Peak memory; measure.memory documents every field of the "nvml" source (device and
    process peaks, torch allocator peaks, contention by other processes)."""

    peak_bytes: int | None
    source: Literal["cpu_rss", "nvml"] | None
    weights_bytes: int | None  # parameters and buffers as stored (4-bit at their real size)
    batch_size: int
    max_length: int
    timeline: MemoryTimeline | None  # memory over time; absent in older records
    # measure.estimate_check: resident memory at the end of the cell's setup (imports made,
    # no data or model yet) and the lifetime peak then; absent in older records
    baseline_rss_bytes: int | None
    peak_rss_at_baseline_bytes: int | None
    baseline_in_use_bytes: int | None  # memory in use then (glibc only; measure.estimate_check)


class MemoryStats(TypedDict):
    max: float
    mean: float
    p99: float


class MemoryTimeline(TypedDict, total=False):
    """Memory sampled through the cell (measure.memory_timeline documents the metrics:
    rss_bytes always, device_bytes, torch_allocated_bytes and torch_reserved_bytes on a GPU).
    Statistics are over every sample; `series` is cut to a few hundred points, each the
    maximum of its time bucket."""

    interval_s: float
    samples: int
    duration_s: float  # from the first sample (after set-up) to the last
    primary: str | None  # the metric the report's percentiles are of
    stats: dict[str, MemoryStats]  # metric -> over the whole cell
    phases: dict[str, dict[str, Any]]  # phase -> {"samples": n, metric: MemoryStats}
    # t_s (seconds from the first sample), phase, and a list per metric, equally long
    series: dict[str, list[Any]]
    error: str | None  # why sampling stopped early, when it did


class EstimateCheck(TypedDict, total=False):
    """The estimate against the peak resident memory above the setup baseline (CPU cells on
    one process; measure.estimate_check)."""

    source: Literal["cpu_rss_above_baseline"]
    estimate_bytes: int
    measured_bytes: int  # peak_bytes - baseline_rss_bytes
    baseline_rss_bytes: int
    error: float  # (estimate - measured) / measured
    # the most memory in use above its baseline (glibc only): the tensors without the
    # allocator's slack, and the estimate's error against it
    in_use_bytes: int
    baseline_in_use_bytes: int
    in_use_error: float


class EstimatedMemory(TypedDict, total=False):
    """The dry run's estimate as a record stores it: `MemoryEstimate.to_dict()`
    (peft_arena.train.memory_estimate documents every term)."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    autocast_bytes: int
    activations_bytes: int
    activations_checkpointed_bytes: int
    gradient_checkpointing: bool
    # absent in older records
    logits_bytes: int
    dequantized_bytes: int
    loading_bytes: int  # QLoRA's load; the total is the larger of it and training's
    length: int  # the sequence length the activations are of
    total_bytes: int


class MemoryTools(TypedDict, total=False):
    """What made the cell fit, and what it was expected to take (peft_arena.train.memory_tools).
    Absent from records made before these tools existed."""

    batch_size: int  # examples per forward pass that trained (after any fallback)
    gradient_accumulation_steps: int  # forward passes per optimizer step
    effective_batch_size: int  # examples per optimizer step, over all processes
    fallback_used: bool  # CUDA ran out of memory and a smaller split trained
    out_of_memory_batch_sizes: list[int]  # the batch sizes that ran out, in order
    gradient_checkpointing: bool
    frozen_dtypes: list[str]  # of the frozen weights: "float32", "bfloat16", "nf4"
    estimate: EstimatedMemory
    estimate_check: EstimateCheck | None  # CPU cells; None on GPU (see the torch peaks)


class Compute(TypedDict, total=False):
    """Training FLOPs and model FLOP utilisation; measure.flops documents the estimate."""

    train_flops: float
    train_flops_per_s: float
    peak_flops_per_s: float
    peak_source: Literal["measured", "cached"]
    peak_under_load: bool
    peak_dtype: str
    mfu: float
    peak_method: str  # how the peak was measured (shape of the matmuls, caching)
    peaks: dict[str, float]  # precision -> measured peak FLOP/s on this device
    model_gemm_flops_per_s: float | None  # matmul rate at the model's own linear shapes
    model_gemm_rows: int
    mfu_model_gemm: float | None  # MFU against that ceiling
    datasheet_flops_per_s: float | None  # GPUs: the vendor's dense peak for the precision
    mfu_datasheet: float | None
    per_token_flops: float
    per_sequence_flops: float
    first_token_last_layer: bool  # the last layer computed position 0 only (FLOPs count that)
    non_embedding_params: int
    trainable_non_embedding_params: int


class HistoryEntry(TypedDict, total=False):
    """One validation pass."""

    epoch: float
    step: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float


class Predictions(TypedDict):
    """Test labels and predictions in the test split's own order, so that two cells sharing a
    test split can be compared example by example."""

    y_true: list[int]
    y_pred: list[int]


class Error(TypedDict):
    type: str
    message: str
    phase: str  # the phase the cell was in, or "process" when its process died
    traceback: str | None


class Artifacts(TypedDict):
    model_dir: str | None  # saved weights (--save-model), relative to the results folder


class Resolved(TypedDict, total=False):
    """What the cell's settings resolved to on this machine."""

    model_path: str
    trust_remote_code: bool
    peft_config: dict[str, Any] | None  # the PEFT config as built (rank_pattern left out)
    precision: str
    attn_implementation: str | None
    train_examples: int
    val_examples: int
    test_examples: int
    label_names: list[str]
    total_steps: int
    tokenize_cache_hits: list[str]  # splits whose token ids came from the cache
    data_fingerprint: dict[str, str]  # split -> hash of the token ids and labels used
    # which kernels the 4-bit weights ran on, in words (absent: no 4-bit weights, or a record
    # made before it existed)
    four_bit_kernel: str
    # Where the weights came from when not a plain model folder (config.gguf_source): format
    # "gguf", gguf_file, sha256, quantization ("Q4_1", ...), tensor_types, architecture and
    # dequantized: true (the quantized file's rounding, not the original checkpoint). None or
    # absent for other models.
    model_source: dict[str, Any] | None
    task_kind: str  # "generation" for a generative task; absent (classification) otherwise
    # model.compiling.CompileOutcome: setting (off | on | auto), compiled (the repeated blocks
    # trained under torch.compile), reason (why eager, when not "off"), mode (torch.compile's),
    # scope ("6 x BertLayer"), seconds (the compile before the first step: time.phases'
    # compile_s), cache ("hit", "miss", "partial": inductor's on-disk cache; None when nothing
    # compiled), cache_counts, graphs (dynamo graphs compiled in the cell). None or absent in
    # records made before it existed.
    compile: dict[str, Any] | None


class Generation(TypedDict, total=False):
    """A generative task's cell (cell/generative.py): how the answers were asked for, made
    and scored."""

    kind: Literal["generation"]
    # generation.prompts.describe: the task's template and system message, whether the
    # tokenizer's chat template rendered it (and its sha256), one rendered prompt, and how
    # many examples had their text cut to fit max_length
    prompt: dict[str, Any]
    answer: str  # "label name", or "text" (the rows' own completions)
    # what metrics.accuracy is of (None: a free-text task, scored by exact match)
    label_scoring: Literal["generate", "likelihood"] | None
    loss: str
    batching: str
    # the test split's greedy decoding: seconds, new_tokens, tokens_per_s, examples, method,
    # max_new_tokens
    decoding: dict[str, Any]
    # "generated": accuracy, macro_f1, invalid_share of the greedy answers; "likelihood" the
    # same of the most likely label (label_scoring: likelihood only); a few answers as written
    scores: dict[str, Any]
    # the untuned model on the same test split: accuracy, macro_f1, invalid_share, decoding,
    # examples, frozen_dtypes, a few answers, and whether it came from the cache
    zero_shot: dict[str, Any] | None


class SplitHygiene(TypedDict, total=False):
    rows: int
    duplicates: int  # rows whose text an earlier row of the same split already has
    in_train: int  # (not train) rows with a training row of the same text


class DataHygiene(TypedDict, total=False):
    """data.hygiene: what data the cell saw. Texts are the same when equal after collapsing
    whitespace. Absent in records made before it existed."""

    text_match: str
    on_bad_rows: Literal["error", "drop"]  # the data settings the cell ran with
    drop_test_leaks: bool
    # split (train, test) -> reason (empty_text, missing_label, float_label,
    # label_out_of_range, unknown_label; in_train for leaked test rows) -> rows dropped
    dropped: dict[str, dict[str, int]]
    full: dict[str, SplitHygiene]  # the task's files (train, test), bad rows dropped
    used: dict[str, SplitHygiene]  # the rows the cell trained, validated and tested on
    test_leaks_into_train: bool  # the test split kept rows whose text is in train


class RetentionTransfer(TypedDict, total=False):
    """The transfer probe: logistic regression on frozen pooled features of another task."""

    task: str | None  # the probed task (None: none usable, `reason` says why)
    reason: str
    examples: int  # that task's probe texts, cross-validated over `folds`
    classes: int
    folds: int
    base_accuracy: float
    tuned_accuracy: float
    delta: float  # tuned - base


class RetentionLM(TypedDict, total=False):
    """The tuned body read through the base model's LM head, against the base model."""

    kind: str | None  # "causal"; None where the model has no LM head (`reason` says why)
    reason: str
    head: str  # where the base LM head came from
    tokens: int  # predicted tokens of the probe texts
    base_perplexity: float
    tuned_perplexity: float
    perplexity_ratio: float  # tuned / base: 1.0 unchanged, above 1 forgot


class Retention(TypedDict, total=False):
    """measure.retention: what the tuned model kept of the base model on general probe texts
    (data.probe_texts). Absent when measure_retention is false and in older records."""

    measured: bool  # False: `reason` says why (no probe texts could be read, ...)
    reason: str
    # hash, texts, per_task, sources (task -> file or Hub split), unavailable, draw_seed,
    # text_match
    probe_set: dict[str, Any]
    max_tokens: int  # probe texts cut to this many tokens
    pooling: str  # "first token" (encoders) or "last non-pad token" (decoders)
    cka: float  # linear CKA of base vs tuned pooled final hidden states; 1.0 unchanged
    transfer: RetentionTransfer
    lm: RetentionLM
    base_cache_hit: bool  # the base model's side came from the cache
    # The base side's cache entry and its own cost, paid once for every cell that shares it:
    # cache_hit, entry, seconds (computing it), computed_by ("matrix": before the cells, in
    # none of their times; "cell": by a cell that found no entry), computed_at, waited_s
    base: dict[str, Any]
    seconds: float
    phases: dict[str, float]  # base_s (~0 on a cache hit), tuned_forward_s, transfer_probe_s


class WeightUpdate(TypedDict, total=False):
    """measure.weight_update: ΔW = merged - base per changed 2-D linear weight of the body."""

    source: str  # "peft delta weights" or "tuned minus checkpoint weights"
    intruder_k: int  # top singular vectors of W + ΔW examined
    intruder_threshold: float  # max |cosine| to W's singular vectors below which one intrudes
    svd: str  # how singular values and vectors were computed
    # module -> shape, delta_norm, base_norm, relative_norm, effective_rank, intruders
    modules: dict[str, dict[str, Any]]
    skipped: dict[str, str]  # module -> why it was not measured
    # modules, relative_norm (all updates together), effective_rank_mean, effective_rank_max,
    # intruders (summed), modules_with_intruders
    summary: dict[str, Any]
    base_vectors_cached: int  # modules whose base singular vectors came from the cache
    seconds: float


class Environment(TypedDict, total=False):
    """measure.provenance: what a reader needs to reproduce a figure or tell two apart."""

    versions: dict[str, str | None]  # package -> version
    # cpu, cpu_count, cpu_bf16_flags, cpu_speed_flags, torch_threads, torch_interop_threads,
    # thread_variables, platform, python, and on a GPU: gpu, gpu_count, gpu_memory_bytes,
    # cuda, cudnn, gpu_driver
    hardware: dict[str, Any]
    precision: str
    git_commit: str | None
    git_dirty: bool | None


class Execution(TypedDict, total=False):
    """How and where the cell ran (records made before executors lack it). The cell writes the
    first group (train.distributed), the matrix adds the second when it writes the record."""

    processes: int  # ranks of a cell over several devices (devices_per_cell); 1 otherwise
    distributed_type: str  # Accelerate's: NO, MULTI_CPU, MULTI_GPU
    threads: int  # torch threads of each process
    per_rank_peak_bytes: list[int | None]  # memory.peak_bytes is their maximum
    hardware: str  # measure.hardware_identity: what the cell's speed depends on
    executor: str  # local | ray | slurm
    workers: int  # local: cells the matrix ran at once
    worker: str  # host:pid (Ray node, Slurm job) that ran the cell
    attempts: int  # Ray: 2 when the first worker was lost and the task ran again
    environment: dict[str, str]  # thread and device variables the executor set for the cell


class Record(TypedDict, total=False):
    schema_version: int
    cell_id: str  # "<task>__<strategy>__seed<seed>__<config hash>"
    status: Status
    spec: dict[str, Any]  # CellSpec.to_dict(): model, task, strategy, seed, every setting
    task_kind: str | None  # "classification" or "generation" (None: the task was unreadable)
    resolved: Resolved
    data_hygiene: DataHygiene
    metrics: Metrics
    params: Params
    time: Time
    memory: Memory
    memory_tools: MemoryTools | None
    compute: Compute
    history: list[HistoryEntry]
    best_step: int | None  # the step whose weights were tested (early stopping)
    stopped_early: bool
    artifacts: Artifacts
    # what the strategy reports about itself after training (AdaLoRA: the final rank per
    # module, `rank_pattern`, and `initial_rank`); None for strategies with nothing to report
    strategy_state: dict[str, Any] | None
    predictions: Predictions | None
    retention: Retention | None
    weight_update: WeightUpdate | None
    generation: Generation  # generation tasks only
    error: Error | None
    run_id: str | None  # the matrix run that wrote the record (absent when made elsewhere)
    environment: Environment
    execution: Execution
    started_at: str | None  # ISO-8601 UTC
    finished_at: str
