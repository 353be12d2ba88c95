"""What the tuned model kept of the base model, measured on the probe set (data.probe_texts).

Three figures, each against the same figure of the untouched base model:

- **CKA**: linear centred kernel alignment (Kornblith et al., 2019) between the base and the
  tuned body's final hidden states, pooled the way the classification head reads them (the
  first token for encoders, BERT and RoBERTa; the last non-pad token for decoders). 1.0:
  the same representation up to rotation and scale.
- **Transfer**: a logistic-regression probe with fixed settings on the frozen pooled features
  of a *different* task than the one trained (`TRANSFER_PAIRS`), cross-validated over that
  task's probe texts; once on the base features, once on the tuned ones.
- **LM loss**: for decoders whose checkpoint holds an LM head (tied input embeddings, or an
  `lm_head`), the perplexity of the tuned body read through the *base* LM head, against the
  base model's. Encoders get none yet (see `language_model_head`); the record then says why
  (the packaged MiniLM's checkpoint has no MLM head at all).

The base model's side (its pooled features, its perplexity and its transfer accuracy on the
probe set) is the same for every strategy and seed of a model: `ensure_base_side` computes it
once and caches it under `config.paths.cache_root()/retention/base`, keyed by the model's
files, the probe set's hash and these settings. A file lock beside each entry makes processes
that need the same entry at once (parallel cells, two runs) wait for one of them to compute
it. The matrix fills the entries of its cells before it starts them (cell.retention_base), so
no cell's time holds the base side; the entry keeps how long it took and who computed it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING

from peft_arena.config.paths import cache_root
from peft_arena.data.probe_set import ProbeSet

# Probe texts are cut to this many tokens (or the cell's max_length, if shorter): the figures
# compare two models on the same inputs, so long inputs buy no accuracy, only time. 32 rather
# than 64 halves the tuned side's forward pass (the probe's 512 texts hold 16k tokens instead
# of 29k), which keeps retention within a tenth of even a short cell's time.
PROBE_MAX_TOKENS = 32
PROBE_BATCH_SIZE = 64
# Trained task -> the task whose probe texts the transfer probe classifies. A task not listed
# (a user's own), or one whose pair has no probe texts, takes the first of TRANSFER_FALLBACK
# in the probe set.
TRANSFER_PAIRS = {"banking77": "agnews", "agnews": "banking77", "imdb": "agnews"}
TRANSFER_FALLBACK = ("agnews", "banking77", "imdb")
# The probe: standardised features, L2-regularised multinomial logistic regression (C=1,
# lbfgs), accuracy over PROBE_FOLDS shuffled folds. Fixed seed: every cell of a model sees the
# same folds, so the base result is shared and differences are the features'.
PROBE_FOLDS = 4
PROBE_SEED = 0
PROBE_MAX_ITER = 300
# Bump when anything above changes what the base side computes (invalidates its cache).
BASE_CACHE_VERSION = 2  # 2: the key names the transfer task; the entry its own time


# ---------------------------------------------------------------- the figures


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature matrices over the same n examples (rows).

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on column-centred float64 features:
    invariant to orthogonal transforms and isotropic scaling of either side.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples on both sides: {x.shape} vs {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else math.nan


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = PROBE_SEED) -> float:
    """Cross-validated accuracy of the fixed logistic-regression probe."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(C=1.0, max_iter=PROBE_MAX_ITER, random_state=seed))
    folds = KFold(n_splits=PROBE_FOLDS, shuffle=True, random_state=seed)
    # One BLAS thread: the matrices are small (256 x 384), and on a busy 2-core machine the
    # 77-class probe took 10.7 s with two threads against 0.35 s with one.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # A fold may miss a rare class (Banking77 has 77); the probe still scores the rest.
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning))
        scores = cross_val_score(probe, np.asarray(features, dtype=np.float64),
                                 np.asarray(labels), cv=folds)
    return float(np.mean(scores))


# ---------------------------------------------------------------- the model's side


def reads_last_token(config: Any) -> bool:
    """Whether the classification head reads the last non-pad token (decoders) rather than
    the first (encoders: the architectures transformers has a masked-LM class for)."""
    return type(config) not in MODEL_FOR_MASKED_LM_MAPPING


def body_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body of a sequence-classification model (inside any PEFT wrapper),
    adapters included: what the head reads."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


@dataclass
class Encoded:
    input_ids: list[list[int]]

    @classmethod
    def of(cls, tokenizer: Any, texts: list[str], max_tokens: int) -> Encoded:
        return cls(tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"])

    def batches(self, pad_id: int, size: int, device: torch.device
                ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """(row indices, input ids, attention mask), right-padded, by length."""
        order = np.argsort([len(ids) for ids in self.input_ids], kind="stable")
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            width = max(len(self.input_ids[i]) for i in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, :len(self.input_ids[i])] = torch.tensor(self.input_ids[i])
                mask[j, :len(self.input_ids[i])] = 1
            yield rows, ids.to(device), mask.to(device)


@dataclass
class BodyOutputs:
    features: np.ndarray  # (texts, hidden) pooled, float32
    lm_loss_sum: float | None = None  # summed next-token cross-entropy (nats)
    lm_tokens: int = 0

    @property
    def perplexity(self) -> float | None:
        if self.lm_loss_sum is None or self.lm_tokens == 0:
            return None
        return math.exp(self.lm_loss_sum / self.lm_tokens)


@torch.inference_mode()
def run_body(body: torch.nn.Module, encoded: Encoded, pad_id: int, *, last_token: bool,
             lm_head: torch.Tensor | None = None, batch_size: int = PROBE_BATCH_SIZE
             ) -> BodyOutputs:
    """Pooled final hidden states of `body` on the encoded texts; with `lm_head` (vocab x
    hidden), also the next-token loss of reading every position through it."""
    was_training = body.training
    body.eval()
    device = next(body.parameters()).device
    features: np.ndarray | None = None
    loss_sum, tokens = 0.0, 0
    try:
        for rows, ids, mask in encoded.batches(pad_id, batch_size, device):
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            if last_token:
                pooled = hidden[torch.arange(len(rows), device=device), mask.sum(1) - 1]
            else:
                pooled = hidden[:, 0]
            pooled = pooled.float().cpu().numpy()
            if features is None:
                features = np.empty((len(encoded.input_ids), pooled.shape[1]), np.float32)
            features[rows] = pooled
            if lm_head is not None:
                logits = hidden[:, :-1].float() @ lm_head.to(device).float().T
                targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                loss_sum += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                    ignore_index=-100, reduction="sum"))
                tokens += int((targets != -100).sum())
    finally:
        body.train(was_training)
    assert features is not None
    return BodyOutputs(features, loss_sum if lm_head is not None else None, tokens)


def checkpoint_files(model_path: str) -> list[Path]:
    """The safetensors files of a model in a local folder or the local Hub cache; [] when
    there are none (a pickled .bin is never read)."""
    folder = Path(model_path)
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors"))
    try:
        from transformers.utils import cached_file

        index = cached_file(model_path, "model.safetensors.index.json", local_files_only=True,
                            _raise_exceptions_for_missing_entries=False)
        if index:
            shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
            return [Path(cached_file(model_path, s, local_files_only=True)) for s in shards]
        single = cached_file(model_path, "model.safetensors", local_files_only=True,
                             _raise_exceptions_for_missing_entries=False)
        return [Path(single)] if single else []
    except (OSError, ValueError, KeyError):
        return []


def read_checkpoint_tensors(files: list[Path], wanted: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of `wanted` names that the checkpoint holds."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in set(handle.keys()) & set(wanted):
                found[name] = handle.get_tensor(name)
    return found


# Where BERT-like (cls.predictions) and RoBERTa-like (lm_head) checkpoints keep an MLM head.
MLM_HEAD_PREFIXES = ("cls.predictions.", "lm_head.")


def checkpoint_keys(files: list[Path]) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    return keys


def language_model_head(model_path: str, config: Any, body: torch.nn.Module
                        ) -> tuple[torch.Tensor | None, str]:
    """(the base model's LM head weight, where it came from), or (None, why there is none).

    Decoders: the `lm_head` a checkpoint holds, else with tied embeddings the input embedding
    matrix as the checkpoint stores it (the base's, not the tuned body's). Encoders: the
    reason says whether their checkpoint holds an MLM head (the masked-LM loss through it is
    not measured yet); the packaged MiniLM, a sentence-embedding checkpoint, holds none."""
    files = checkpoint_files(model_path)
    if not reads_last_token(config):
        if any(name.startswith(MLM_HEAD_PREFIXES) for name in checkpoint_keys(files)):
            return None, ("encoder with an MLM head in its checkpoint: the masked-LM loss is "
                          "not measured yet")
        return None, ("encoder whose checkpoint holds no MLM head (no cls.predictions or "
                      "lm_head weights): no LM figure")
    if not files:
        return None, "no safetensors checkpoint on disk to read the base LM head from"
    embedding = body.get_input_embeddings()
    embedding_name = next(n for n, p in body.named_parameters() if p is embedding.weight)
    candidates = ["lm_head.weight"]
    if getattr(config, "tie_word_embeddings", False):
        candidates += [embedding_name, f"model.{embedding_name}",
                       f"transformer.{embedding_name}"]
    tensors = read_checkpoint_tensors(files, candidates)
    for name in candidates:
        if name in tensors:
            source = ("lm_head in the checkpoint" if name == "lm_head.weight"
                      else "tied input embeddings of the checkpoint")
            return tensors[name], source
    return None, "the checkpoint holds no LM head (neither lm_head nor tied embeddings)"


# ---------------------------------------------------------------- the base side, cached


def model_stamp(model_path: str) -> list[Any]:
    files = checkpoint_files(model_path)
    return [model_path, [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]]


def base_cache_file(key_parts: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode())
    return cache_root() / "retention" / "base" / f"{key.hexdigest()[:24]}.npz"


def load_base(path: Path) -> tuple[BodyOutputs, dict[str, Any]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            outputs = BodyOutputs(data["features"].astype(np.float32), meta["lm_loss_sum"],
                                  int(meta["lm_tokens"]))
        return outputs, meta
    except (OSError, ValueError, KeyError):
        return None  # damaged: recomputed


def save_base(path: Path, outputs: BodyOutputs, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{time.time_ns()}.tmp.npz")
    np.savez(tmp, features=outputs.features, meta=np.array(json.dumps(
        {**meta, "lm_loss_sum": outputs.lm_loss_sum, "lm_tokens": outputs.lm_tokens})))
    tmp.replace(path)


@contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Held while one process computes an entry: the others wait, then read it. The OS drops
    the lock when its holder ends, whatever ended it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class BaseSide:
    """The base model's side of the figures, and where it came from."""

    outputs: BodyOutputs
    meta: dict[str, Any]  # transfer_accuracy; seconds, computed_at, computed_by, host
    cache_hit: bool  # read from the cache (computed earlier, by another process or run)
    file: Path
    waited_s: float = 0.0  # time spent waiting for another process computing the entry

    def describe(self) -> dict[str, Any]:
        """The record's note on the base side: its entry and its own cost, paid once."""
        return {"cache_hit": self.cache_hit, "entry": self.file.stem,
                **{k: self.meta.get(k) for k in ("seconds", "computed_by", "computed_at")},
                "waited_s": self.waited_s}


@dataclass
class BaseInputs:
    """What fixes the base side: one cache entry per distinct value of these."""

    model_path: str
    config: Any  # the model's config: which token the head reads
    tokenizer: Any
    trained_task: str
    probe: ProbeSet
    max_length: int
    dtype_name: str

    @property
    def max_tokens(self) -> int:
        return min(self.max_length, PROBE_MAX_TOKENS)

    @property
    def transfer(self) -> str | None:
        return transfer_task(self.trained_task, self.probe)

    def cache_file(self) -> Path:
        return base_cache_file({
            "model": model_stamp(self.model_path), "probe": self.probe.digest,
            "max_tokens": self.max_tokens, "dtype": self.dtype_name,
            "last_token": reads_last_token(self.config), "transfer": self.transfer,
            "probe_settings": [PROBE_FOLDS, PROBE_SEED, PROBE_MAX_ITER],
            "version": BASE_CACHE_VERSION})

    def encoded(self) -> Encoded:
        return Encoded.of(self.tokenizer, self.probe.texts, self.max_tokens)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def ensure_base_side(inputs: BaseInputs, load_base_model: Callable[[], torch.nn.Module], *,
                     computed_by: str) -> BaseSide:
    """The base side from the cache, else computed (by loading the base model) and cached.
    Processes asking for the same entry at once compute it once: the first holds the entry's
    lock, the rest wait for it and read what it wrote."""
    path = inputs.cache_file()
    if (cached := load_base(path)) is not None:
        return BaseSide(*cached, cache_hit=True, file=path)
    asked = time.perf_counter()
    with entry_lock(path):
        waited = time.perf_counter() - asked
        if (cached := load_base(path)) is not None:  # another process computed it meanwhile
            return BaseSide(*cached, cache_hit=True, file=path, waited_s=waited)
        started = time.perf_counter()
        base_model = load_base_model()
        body = body_of(base_model)
        head, _ = language_model_head(inputs.model_path, inputs.config, body)
        outputs = run_body(body, inputs.encoded(), inputs.pad_id,
                           last_token=reads_last_token(inputs.config), lm_head=head)
        del base_model, body
        meta = {"transfer_accuracy": _transfer_accuracy(outputs.features, inputs.probe,
                                                        inputs.transfer),
                "computed_by": computed_by, "host": socket.gethostname(), "pid": os.getpid(),
                "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        meta["seconds"] = time.perf_counter() - started
        save_base(path, outputs, meta)
        meta = {**meta, "lm_loss_sum": outputs.lm_loss_sum, "lm_tokens": outputs.lm_tokens}
    return BaseSide(outputs, meta, cache_hit=False, file=path)


# ---------------------------------------------------------------- the section


def transfer_task(trained: str, probe: ProbeSet) -> str | None:
    """The task the transfer probe classifies, or None when the probe set has none usable."""
    # The documented pair first; where its texts are missing, the next task that has some.
    candidates = [TRANSFER_PAIRS.get(trained), *TRANSFER_FALLBACK]
    for task in candidates:
        if task not in (None, trained) and len(probe.indices_of(task)) >= 2 * PROBE_FOLDS:
            return task
    return None


def no_probe_texts(probe: ProbeSet) -> dict[str, Any] | None:
    """The not-measured section when the probe set is empty, else None."""
    if len(probe):
        return None
    return {"measured": False, "reason": "no probe texts: "
            + ("; ".join(f"{k}: {v}" for k, v in probe.unavailable.items()) or "none drawn"),
            "probe_set": probe.describe()}


def retention_section(*, tuned: torch.nn.Module, load_base_model: Any, tokenizer: Any,
                      model_path: str, trained_task: str, probe: ProbeSet, max_length: int,
                      dtype_name: str,
                      every_position: Callable[[], AbstractContextManager[Any]] = nullcontext
                      ) -> dict[str, Any]:
    """The record's retention section (records.schema.Retention).

    `tuned`: the trained classification model (any PEFT wrapper); `load_base_model`: a
    function that loads the untouched classification model the cell started from, called
    only when the base side is not cached; `every_position`: a context in which `tuned`
    computes every position of its last layer, entered only when an LM head reads them all
    (the pooled features need the read position alone, which a pruned layer computes)."""
    started = time.perf_counter()
    if (empty := no_probe_texts(probe)) is not None:
        return empty
    tuned_body = body_of(tuned)
    inputs = BaseInputs(model_path, tuned_body.config, tokenizer, trained_task, probe,
                        max_length, dtype_name)
    last = reads_last_token(inputs.config)
    head, head_source = language_model_head(model_path, inputs.config, tuned_body)
    encoded = inputs.encoded()
    base_started = time.perf_counter()
    base = ensure_base_side(inputs, load_base_model, computed_by="cell")
    tuned_started = time.perf_counter()
    with every_position() if head is not None else nullcontext():
        tuned_out = run_body(tuned_body, encoded, inputs.pad_id, last_token=last, lm_head=head)
    probe_started = time.perf_counter()
    transfer_figures = _transfer_section(inputs.transfer, probe,
                                         base.meta.get("transfer_accuracy"),
                                         tuned_out.features)
    section: dict[str, Any] = {
        "measured": True,
        "probe_set": probe.describe(),
        "max_tokens": inputs.max_tokens,
        "pooling": "last non-pad token" if last else "first token",
        "cka": linear_cka(base.outputs.features, tuned_out.features),
        "transfer": transfer_figures,
        "lm": _lm_section(head_source, base.outputs, tuned_out),
        "base_cache_hit": base.cache_hit,
        "base": base.describe(),
    }
    done = time.perf_counter()
    section["seconds"] = done - started
    # Where the time went: the base side is ~0 on a cache hit (the matrix fills the cache
    # before its cells start).
    section["phases"] = {"base_s": tuned_started - base_started,
                         "tuned_forward_s": probe_started - tuned_started,
                         "transfer_probe_s": done - probe_started}
    return section


def _transfer_accuracy(features: np.ndarray, probe: ProbeSet, task: str | None
                       ) -> float | None:
    if task is None:
        return None
    rows = probe.indices_of(task)
    return probe_accuracy(features[rows], np.asarray(probe.labels)[rows])


def _transfer_section(task: str | None, probe: ProbeSet, base_accuracy: float | None,
                      tuned_features: np.ndarray) -> dict[str, Any]:
    if task is None or base_accuracy is None:
        return {"task": None, "reason": "no other task with enough probe texts"}
    rows = probe.indices_of(task)
    tuned = _transfer_accuracy(tuned_features, probe, task)
    assert tuned is not None
    return {"task": task, "examples": len(rows),
            "classes": len(set(np.asarray(probe.labels)[rows].tolist())),
            "folds": PROBE_FOLDS, "base_accuracy": base_accuracy, "tuned_accuracy": tuned,
            "delta": tuned - base_accuracy}


def _lm_section(head_source: str, base: BodyOutputs, tuned: BodyOutputs) -> dict[str, Any]:
    base_ppl, tuned_ppl = base.perplexity, tuned.perplexity
    if base_ppl is None or tuned_ppl is None:
        return {"kind": None, "reason": head_source}
    return {"kind": "causal", "head": head_source, "tokens": tuned.lm_tokens,
            "base_perplexity": base_ppl, "tuned_perplexity": tuned_ppl,
            "perplexity_ratio": tuned_ppl / base_ppl}
