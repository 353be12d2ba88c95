"""Tokenization (cached on disk) and length-aware batching with dynamic padding.

Padding every example to a fixed length wastes most of the compute on short-text tasks, so
batches are padded to their own longest example, training batches group examples of similar
length (shuffled between groups, seeded), and evaluation runs sorted by length.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from peft_arena.config.paths import token_cache_dir

# Examples are sorted by length within windows of this many batches: enough to cut padding,
# few enough that batch composition still varies between epochs.
GROUP_WINDOW_BATCHES = 50


class TokenizedSplit:
    """Token ids of a split as a flat array plus offsets (cheap to save, load and slice)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        self.flat, self.offsets, self.labels = flat, offsets, labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, index: int) -> np.ndarray:
        return self.flat[self.offsets[index]:self.offsets[index + 1]]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.flat, self.offsets, self.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer would produce different ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:
        # A call with truncation stores its settings in the backend; they are per call (and
        # part of the cache key as max_length), not part of the tokenizer's identity.
        config = json.loads(backend.to_str())
        config.pop("truncation", None)
        config.pop("padding", None)
        state = json.dumps(config, sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def _cache_key(texts: Sequence[str], tokenizer_id: str, max_length: int) -> str:
    digest = hashlib.sha256(f"{tokenizer_id}|{max_length}|{len(texts)}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _encode(texts: Sequence[str], tokenizer, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for ids in encoded for t in ids), dtype=np.int32, count=offsets[-1])
    return flat, offsets


def tokenize(texts: Sequence[str], labels: np.ndarray, tokenizer, max_length: int,
             use_cache: bool = True) -> tuple[TokenizedSplit, bool]:
    """(split, cache_hit). The cache key covers the tokenizer, max length and every text, so a
    changed input can never be served stale ids."""
    key = _cache_key(texts, tokenizer_fingerprint(tokenizer), max_length)
    path = token_cache_dir() / f"{key}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path) as stored:
                return TokenizedSplit(stored["flat"], stored["offsets"], labels), True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache file is rebuilt, never trusted
    flat, offsets = _encode(texts, tokenizer, max_length)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, flat=flat, offsets=offsets)
        os.replace(tmp, path)
    return TokenizedSplit(flat, offsets, labels), False


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length examples; a new seeded order every epoch."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        window = self.batch_size * GROUP_WINDOW_BATCHES
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist()
                        for i in range(0, len(chunk), self.batch_size)]
        for i in rng.permutation(len(batches)):
            yield batches[i]


def sorted_batches(lengths: np.ndarray, batch_size: int,
                   token_budget: int | None = None) -> list[list[int]]:
    """Evaluation batches, longest first, so padding is minimal and memory peaks early.

    `token_budget`: also at most this many padded tokens a batch. Sorted batches of a fixed
    size still pad the longest ones to the longest text of all: on 250 Banking77 queries
    (16 tokens on average, the longest 79) a batch of 128 held about three times more padded
    tokens than real ones. With a budget the long texts go in smaller batches; predictions do
    not depend on how a split is batched."""
    order = np.argsort(-lengths, kind="stable")
    if token_budget is None:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        # The batch is padded to its first (longest) text.
        rows = max(1, min(batch_size, token_budget // max(int(lengths[order[start]]), 1)))
        batches.append(order[start:start + rows].tolist())
        start += rows
    return batches


def evaluation_token_budget(lengths: np.ndarray, batch_size: int) -> int:
    """A full batch of texts of the split's mean length: the padded tokens a batch may hold."""
    return max(1, round(batch_size * float(np.mean(lengths)))) if len(lengths) else batch_size


class Collator:
    """Pads a batch of indices to its longest example."""

    def __init__(self, split: TokenizedSplit, pad_id: int) -> None:
        self.split, self.pad_id = split, pad_id

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.split.ids(i) for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            input_ids[n, :len(row)] = torch.from_numpy(row.astype(np.int64))
            attention[n, :len(row)] = 1
        labels = torch.as_tensor(self.split.labels[indices], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class IndexDataset(torch.utils.data.Dataset):
    """Yields indices; the collator turns a batch of them into tensors in one go."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index
