"""A generative task's cell: the steps of `Cell`, with a causal LM that writes the answer.

What differs from the classification cell, step by step (everything else is shared: set-up,
the strategy's wrap, the training loop, measurements, retention, the record):

- data: each row becomes a prompt -> label-name example (generation.examples), rendered
  from the task's template through the tokenizer's chat template where it has one, and
  tokenized apart from its completion (generation.prompts). Training batches are length
  grouped and padded on the right, with the loss on the completion only
  (generation.collate). Packing is exact too, but its dense block-diagonal mask costs
  attention work quadratic in the packed length, more than length grouping's padding saves
  on CPU: the cell pads.
- model: the causal LM with its own head (AutoModelForCausalLM); the strategy wraps it with
  PEFT's CAUSAL_LM task type. Before the wrap, the untuned model answers the test split
  once per model, task, test set and frozen dtype (cached): the zero-shot score the
  record keeps beside the tuned one.
- train: the completion loss with the LM head only at label positions (generation.loss);
  a validation pass is that loss plus greedy answers on the validation split.
- test: the test split's completion loss (phase `eval`), then batched greedy decoding with
  the KV cache up to the longest label's length (phase `decode`, with its tokens/s), the
  answers parsed into labels (generation.scoring). With `label_scoring: likelihood` the
  metrics are each label's log-likelihood instead, as lm-evaluation-harness scores.
- record: metrics gain `invalid_share` and `zero_shot`; `resolved.task_kind`; and a
  `generation` section (prompt and template, decoding, scoring, zero-shot).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from peft_arena.cell import sections
from peft_arena.cell.runner import CELL_KINDS, Cell
from peft_arena.cell.setup import Setup
from peft_arena.common import progress
from peft_arena.common.atomic_file import write_json
from peft_arena.config.paths import cache_root
from peft_arena.config.tasks import PLACEHOLDER, TaskSpec, resolve_task
from peft_arena.data.batching import IndexDataset, LengthGroupedBatchSampler
from peft_arena.data.loading import load_cell_data
from peft_arena.generation.collate import (
    CompletionCollator,
    batch_sequences,
    batch_tokens,
)
from peft_arena.generation.data import load_text_task
from peft_arena.generation.decode import Decoded, greedy_decode
from peft_arena.generation.examples import label_examples
from peft_arena.generation.loss import completion_loss
from peft_arena.generation.models import check_generative
from peft_arena.generation.prompts import (
    Encoded,
    PromptFormat,
    check_label_tokens,
    completion_ids,
    describe,
    encode,
)
from peft_arena.generation.scoring import (
    INVALID,
    label_log_likelihoods,
    label_scores,
    normalize,
    parse_labels,
    text_scores,
)
from peft_arena.model.heads import load_config
from peft_arena.model.loading import inference_attention, load_causal_lm, load_tokenizer
from peft_arena.records.schema import Metrics, Record, Resolved
from peft_arena.train import distributed
from peft_arena.train.build import Built, build_for_training
from peft_arena.train.inputs import SPLITS, Inputs, evaluation_batches
from peft_arena.train.loop import EvalResult, TaskHooks, TrainResult, optimizer_steps_per_epoch
from peft_arena.train.memory_tools import BatchPlan

# Rows decoded at once: a KV cache per row; more rows than this gained nothing on CPU.
DECODE_BATCH = 64
ZERO_SHOT_VERSION = 1  # bump when the zero-shot measurement changes


@dataclass
class Answers:
    """What the generative steps know beyond `Inputs`."""

    task: TaskSpec
    prompt_format: PromptFormat
    label_completions: list[np.ndarray]  # each label's completion ids, eos included
    labels: dict[str, np.ndarray] | None  # split -> label id per example; None: free text
    references: dict[str, list[str]]  # split -> the completion of each example
    max_new_tokens: int


class GenerativeCell(Cell):
    """The steps of one generative cell (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: Answers | None = None
        self.zero_shot: dict[str, Any] | None = None
        self.decoded: Decoded | None = None
        self.scoring: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._inputs: Inputs | None = None

    # ------------------------------------------------------------------ data

    def load_data(self, *, data_hygiene: bool = True) -> Inputs:
        spec = self.spec
        task = resolve_task(spec.task_source)
        with self.timer.phase("data"), progress.status(f"loading {spec.task} data"):
            check_generative(spec.model, load_config(
                spec.model, trust_remote_code=self.trust_remote_code), spec.task)
            if task.answers_text:
                text = load_text_task(task, val_fraction=spec.val_fraction,
                                      max_train_samples=spec.max_train_samples,
                                      max_eval_samples=spec.max_eval_samples,
                                      seed=spec.data_seed)
                examples = {"train": text.train, "val": text.val, "test": text.test}
                label_names: list[str] = []
                labels, hygiene = None, None
            else:
                data = load_cell_data(spec, self.data_dir, data_hygiene=data_hygiene)
                by_name = dict(zip(SPLITS, (data.train, data.val, data.test), strict=True))
                label_names, hygiene = data.label_names, data.hygiene
                examples = {name: label_examples(split.texts, split.labels, label_names)
                            for name, split in by_name.items()}
                labels = {name: split.labels for name, split in by_name.items()}
        with self.timer.phase("tokenize"), progress.status("tokenizing prompts"):
            tokenizer = load_tokenizer(spec.model, trust_remote_code=self.trust_remote_code)
            self._tokenizer = tokenizer
            fmt = PromptFormat(task.prompt or PLACEHOLDER, task.system, task.chat_template)
            # A label task keeps room for its longest label name in every split, so that no
            # prompt's cut depends on its own answer.
            answer_room = (max(len(ids) for ids in completion_ids(
                tokenizer, label_names, fmt.uses_chat(tokenizer))) if label_names else None)
            splits = {name: encode(rows, fmt, tokenizer, spec.max_length,
                                   where=f"{spec.task} {name}", answer_room=answer_room)
                      for name, rows in examples.items()}
            chat = splits["train"].chat
            options = completion_ids(tokenizer, label_names, chat)
            if label_names:
                check_label_tokens(tokenizer, label_names, chat)
                longest = max(len(ids) for ids in options)
            else:  # the longest answer of any split: a budget, not a hint at any one answer
                longest = max(len(ids) for split in splits.values()
                              for ids in split.completion_ids)
            pad_id = tokenizer.pad_token_id
            self.answers = Answers(task, fmt, options, labels,
                                   {name: [e.answer for e in rows]
                                    for name, rows in examples.items()}, longest)
            loaders = {"train": self._loader(splits["train"], pad_id, LengthGroupedBatchSampler(
                splits["train"].lengths, spec.batch_size, spec.seed))}
            for name in ("val", "test"):
                loaders[name] = self._loader(splits[name], pad_id, distributed.SizedBatches(
                    evaluation_batches(spec, splits[name].lengths), spec.eval_batch_size))
            total_steps = max(1, int(np.ceil(optimizer_steps_per_epoch(
                len(loaders["train"]), spec.gradient_accumulation_steps) * spec.epochs)))
        # Answers are decoded in the split's own order: the predictions need no reordering.
        self._inputs = Inputs(label_names, splits, [], tokenizer, loaders,  # type: ignore[arg-type]
                              [list(range(len(splits["test"])))], total_steps, pad_id, hygiene)
        return self._inputs

    @staticmethod
    def _loader(split: Encoded, pad_id: int, batch_sampler: Any) -> DataLoader:
        return DataLoader(IndexDataset(len(split)), batch_sampler=batch_sampler,
                          collate_fn=CompletionCollator(split.prompt_ids, split.completion_ids,
                                                        pad_id))

    def _train_loader(self, inputs: Inputs, batch_size: int) -> DataLoader:
        return self._loader(inputs.splits["train"], inputs.pad_id, LengthGroupedBatchSampler(
            inputs.splits["train"].lengths, batch_size, self.spec.seed))

    # ------------------------------------------------------------------ model

    def build_model(self, setup: Setup, inputs: Inputs, plan: BatchPlan | None = None) -> Built:
        plan = plan or BatchPlan(self.spec.batch_size, self.spec.gradient_accumulation_steps)

        def load(model: str, _label_names: list[str], **settings: Any) -> torch.nn.Module:
            loaded = load_causal_lm(model, **settings)
            if self.zero_shot is None:  # a retried build (a smaller batch) measured it already
                with self.timer.phase("zero_shot"), progress.status("zero-shot answers"):
                    self.zero_shot = self._zero_shot(loaded, inputs)
            return loaded

        with self.timer.phase("model"):
            return build_for_training(
                self.spec, setup.strategy, setup.accelerator, inputs, plan,
                precision=setup.precision, trust_remote_code=self.trust_remote_code, load=load,
                train_batches=lambda batch_size: self._train_loader(inputs, batch_size),
                timer=self.timer)

    def _zero_shot(self, model: torch.nn.Module, inputs: Inputs) -> dict[str, Any]:
        """The untuned model's test scores, from the cache when this model, task, test set
        and frozen weights' dtype were measured before."""
        assert self.answers is not None
        test = inputs.splits["test"]
        frozen = sorted({str(p.dtype) for p in model.parameters()})
        key = hashlib.sha256(json.dumps(
            [ZERO_SHOT_VERSION, self.spec.model, self.spec.task, test.fingerprint(), frozen,
             self.answers.max_new_tokens], default=str).encode()).hexdigest()[:24]
        path = cache_root() / "zero_shot" / f"{key}.json"
        if path.is_file():
            try:
                return {**json.loads(path.read_text(encoding="utf-8")), "cached": True}
            except json.JSONDecodeError:
                pass  # a damaged cache file is measured again
        decoded = self._decode(model, test, None)
        scores, _, _ = self._score("test", decoded.texts, inputs.label_names)
        result = {**scores, "decoding": decoded.phase(), "examples": len(test),
                  "frozen_dtypes": frozen, "answers_shown": decoded.texts[:5]}
        write_json(path, result)
        return {**result, "cached": False}

    def _decode(self, model: torch.nn.Module, split: Encoded, device: torch.device | None
                ) -> Decoded:
        assert self.answers is not None
        with inference_attention(model):
            return greedy_decode(model, self._tokenizer, split.prompt_ids,
                                 max_new_tokens=self.answers.max_new_tokens,
                                 batch_size=min(self.spec.eval_batch_size, DECODE_BATCH),
                                 device=device)

    # ------------------------------------------------------------------ train

    def hooks(self, setup: Setup, inputs: Inputs) -> TaskHooks:
        def validate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator
                     ) -> EvalResult:
            return self._evaluate(model, loader, accelerator, inputs, "val")

        return TaskHooks(loss=completion_loss, samples=batch_sequences, tokens=batch_tokens,
                         validate=validate)

    def _loss_over(self, model: torch.nn.Module, loader: DataLoader) -> tuple[float, int]:
        """Mean completion loss over a split's batches, and its real tokens."""
        total, count, tokens = 0.0, 0, 0
        with torch.inference_mode():
            for batch in loader:
                losses = completion_loss(model, batch, reduction="none")
                total += float(losses.double().sum())
                count += losses.numel()
                tokens += batch_tokens(batch)
        return total / max(count, 1), tokens

    def _evaluate(self, model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                  inputs: Inputs, split: str, *, timed: bool = False) -> EvalResult:
        assert self.answers is not None
        model.eval()
        unwrapped = accelerator.unwrap_model(model)
        with inference_attention(unwrapped):
            loss, tokens = self._loss_over(model, loader)
        if timed:
            with self.timer.phase("decode"), progress.status("decoding answers"):
                decoded = self._decode(unwrapped, inputs.splits[split], accelerator.device)
            self.decoded = decoded
        else:
            decoded = self._decode(unwrapped, inputs.splits[split], accelerator.device)
        scores, y_true, y_pred = self._score(split, decoded.texts, inputs.label_names)
        if timed:
            self.scoring = {"generated": scores, "answers_shown": decoded.texts[:5]}
        if timed and self.answers.labels is not None \
                and self.answers.task.label_scoring == "likelihood":
            with self.timer.phase("eval"), progress.status("scoring label likelihoods"):
                likelihoods = label_log_likelihoods(
                    unwrapped, inputs.splits[split].prompt_ids, self.answers.label_completions,
                    inputs.pad_id, batch_size=min(self.spec.eval_batch_size, DECODE_BATCH))
            y_pred = likelihoods.argmax(axis=1)
            scores = label_scores(y_true, y_pred, len(inputs.label_names))
            self.scoring["likelihood"] = scores
        model.train()
        return EvalResult(loss=loss, accuracy=scores["accuracy"],
                          macro_f1=scores.get("macro_f1", float("nan")),
                          samples=len(y_true), tokens=tokens, y_true=np.asarray(y_true),
                          y_pred=np.asarray(y_pred))

    def _score(self, split: str, texts: list[str], label_names: list[str]
               ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """(scores, y_true, y_pred) of a split's answers. Free text: accuracy is the exact
        match, and y_pred is y_true where an answer matches its reference (so the report's
        paired tests compare the same correctness as for labels)."""
        assert self.answers is not None
        if self.answers.labels is not None:
            y_true = self.answers.labels[split]
            y_pred = parse_labels(texts, label_names)
            return label_scores(y_true, y_pred, len(label_names)), y_true, y_pred
        references = self.answers.references[split]
        scores = text_scores(texts, references)
        exact = np.array([normalize(a) == normalize(r)
                          for a, r in zip(texts, references, strict=True)], dtype=bool)
        y_true = np.zeros(len(texts), dtype=np.int64)
        return ({"accuracy": scores["exact_match"], **scores}, y_true,
                np.where(exact, 0, INVALID).astype(np.int64))

    def retain(self, setup: Setup, inputs: Inputs, built: Built) -> Any:
        # The base body is loaded as a classifier; a free-text task has no labels to give it.
        return super().retain(setup, dataclasses.replace(
            inputs, label_names=inputs.label_names or ["answer"]), built)

    # ------------------------------------------------------------------ test

    def test(self, setup: Setup, built: Built) -> EvalResult:
        inputs = self._inputs
        assert inputs is not None
        with self.timer.phase("eval"):
            tested = self._evaluate(built.model, built.loaders["test"], setup.accelerator,
                                    inputs, "test", timed=True)
        built.model.eval()
        return tested

    # ------------------------------------------------------------------ record sections

    def metrics(self, inputs: Inputs, trained: TrainResult, tested: EvalResult) -> Metrics:
        generated = self.scoring.get("generated", {})
        if inputs.label_names:
            metrics = super().metrics(inputs, trained, tested)
            metrics.pop("confidence", None)  # no softmax over labels: nothing to calibrate
            keys = ("accuracy", "macro_f1", "invalid_share")
            return {**metrics, "invalid_share": generated.get("invalid_share"),
                    "zero_shot": {key: (self.zero_shot or {}).get(key) for key in keys}}
        keys = ("accuracy", "exact_match", "chrf")
        return {"accuracy": tested.accuracy, "macro_f1": None, "eval_loss": tested.loss,
                **sections.val_metrics(trained), "exact_match": generated.get("exact_match"),
                "chrf": generated.get("chrf"), "invalid_share": None,
                "zero_shot": {key: (self.zero_shot or {}).get(key) for key in keys}}

    def generation_section(self, inputs: Inputs) -> dict[str, Any]:
        assert self.answers is not None
        return {
            "kind": "generation",
            "prompt": describe(self.answers.prompt_format, inputs.tokenizer,
                               inputs.splits["train"]),
            "answer": "text" if self.answers.labels is None else "label name",
            "label_scoring": (self.answers.task.label_scoring
                              if self.answers.labels is not None else None),
            "loss": "completion tokens only; LM head at the label positions only",
            "batching": "length-grouped, right-padded",
            "decoding": {**(self.decoded.phase() if self.decoded else {}),
                         "method": "greedy, KV cache, left padding",
                         "max_new_tokens": self.answers.max_new_tokens},
            "scores": self.scoring,
            "zero_shot": self.zero_shot,
        }

    def run(self) -> Record:
        record = super().run()
        assert self._inputs is not None
        resolved: Resolved = {**record["resolved"], "task_kind": "generation"}
        return {**record, "resolved": resolved,
                "generation": self.generation_section(self._inputs)}  # type: ignore[typeddict-item]


CELL_KINDS["generation"] = GenerativeCell
