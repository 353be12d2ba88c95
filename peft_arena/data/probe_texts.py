"""The probe set: general texts that are none of the trained task's, for the retention figures.

A cell trained on one task is probed on texts of the other built-in tasks (AG News, Banking77,
IMDB): `TEXTS_PER_TASK` texts drawn with a fixed seed from each one's test file, read from the
cell's data dir (or the Hub when there is none). A text the trained task also has, in its
train or test file, is never drawn (texts compare after collapsing whitespace, as
data.hygiene does), nor is a second copy of a text already drawn. The probe texts keep their
own task's label, so the transfer probe (measure.retention) reads its examples from the same
set, and one forward pass of the tuned model serves every figure.

Where no source task can be read (a user's own task run offline, without a data dir), the
set falls back to general English prose that ships with Python itself: the paragraphs of its
documentation topics (`pydoc_data`, part of the standard library), drawn the same way. They
carry no labels, so the transfer probe is not measured then; CKA, and for decoders the
perplexity, are.

Drawing reads whole task files (IMDB's are 66 MB); the drawn set is cached under
`config.paths.cache_root()/retention`, keyed by the trained task, the source files' sizes and
modification times and the draw's settings, so only a task's first cell pays for it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from peft_arena.common.atomic_file import write_json
from peft_arena.common.errors import UserError
from peft_arena.config.paths import cache_root
from peft_arena.config.tasks import TaskSpec, builtin_tasks, resolve_task
from peft_arena.data import hygiene
from peft_arena.data.probe_set import ProbeSet

# 256 a task: enough for a linear CKA whose seed-to-seed spread is well below the gaps between
# strategies, and for a 4-class probe; two source tasks make 512 texts, one forward pass of
# about a second for MiniLM on a CPU core.
TEXTS_PER_TASK = 256
DRAW_SEED = 0
# The draw's own version: change it when the drawing changes, so cached sets are redrawn.
DRAW_VERSION = 2


FALLBACK_SOURCE = "python-docs"
NO_LABEL = -1  # a fallback text's label: it belongs to no task


def fallback_texts() -> list[str]:
    """The prose paragraphs of Python's documentation topics, whitespace collapsed: at least
    a dozen words each, mostly letters (code examples and tables left out)."""
    import re
    from pydoc_data.topics import topics

    texts = []
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(paragraph.split())
            letters = sum(c.isalpha() for c in text.replace(" ", ""))
            if (len(text.split()) >= 12 and not text.startswith((">>>", "..."))
                    and letters > 0.7 * len(text.replace(" ", ""))):
                texts.append(text)
    return texts


def _drawn_with(seed: int) -> dict[str, Any]:
    return {"draw_seed": seed, "text_match": hygiene.TEXT_MATCH}


def source_tasks(trained: str) -> list[str]:
    """The built-in tasks a cell trained on `trained` is probed on: every other data set. A
    generative form (agnews-gen) reads its classification task's data: never a source, and
    its own data is the trained task's."""
    tasks = builtin_tasks()
    own = tasks.get(trained).data_name if trained in tasks.names() else trained
    return [name for name in tasks.names()
            if tasks.get(name).kind == "classification" and name != own]


def _file_stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _task_stamp(task: TaskSpec, data_dir: Path | None) -> list[Any]:
    """What identifies a task's data without reading it: its files' sizes and times, or its
    Hub data set and revision."""
    if task.is_local:
        return [_file_stamp(Path(p)) for p in (task.train_file, task.test_file)]
    if data_dir is not None:
        folder = Path(data_dir) / task.data_name
        files = sorted(folder.glob("*.*")) if folder.is_dir() else []
        return [_file_stamp(p) for p in files if p.suffix in (".jsonl", ".csv", ".parquet",
                                                              ".json")]
    hub = task.hub
    return [hub.path, hub.revision] if hub else [task.name]


def _load_all(task: TaskSpec, data_dir: Path | None) -> tuple[list[str], list[str], list[int]]:
    """(train texts, test texts, test labels) of a task's files, unusable rows dropped."""
    from peft_arena.data.loading import load_task_data  # pandas and scikit-learn: only when drawing

    data = load_task_data(task, data_dir, on_bad_rows="drop")
    return (data.train.texts + data.val.texts, data.test.texts,
            [int(v) for v in data.test.labels])


def _draw(texts: list[str], labels: list[int], excluded: set[str], n: int,
          seed: int) -> tuple[list[str], list[int]]:
    order = np.random.default_rng(seed).permutation(len(texts))
    kept_texts, kept_labels, seen = [], [], set(excluded)
    for i in order:
        norm = hygiene.normalise(texts[i])
        if norm in seen:
            continue
        seen.add(norm)
        kept_texts.append(texts[i])
        kept_labels.append(labels[i])
        if len(kept_texts) == n:
            break
    return kept_texts, kept_labels


def draw_probe_set(trained: TaskSpec, data_dir: Path | None, *, per_task: int = TEXTS_PER_TASK,
                   seed: int = DRAW_SEED, cache: bool = True) -> ProbeSet:
    """The probe set of a cell trained on `trained` (see the module docstring). A source task
    whose data cannot be read (no folder in the data dir, the Hub out of reach) is left out
    and named in `unavailable`; the set may then be empty."""
    sources = source_tasks(trained.name)
    stamps = {"trained": [trained.name, _task_stamp(trained, data_dir)],
              "sources": {name: _task_stamp(resolve_task(name), data_dir) for name in sources},
              "per_task": per_task, "seed": seed, "version": DRAW_VERSION,
              "fallback": [FALLBACK_SOURCE, sys.version_info[:2]]}
    key = hashlib.sha256(json.dumps(stamps, sort_keys=True, default=str).encode()).hexdigest()
    cached = cache_root() / "retention" / "probe_sets" / f"{key[:24]}.json"
    if cache and cached.is_file():
        try:
            return ProbeSet(**json.loads(cached.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError):
            pass  # a damaged cache file is redrawn
    try:
        train_texts, test_texts, _ = _load_all(trained, data_dir)
        excluded = set(hygiene.Normaliser()(train_texts + test_texts))
    except UserError as exc:
        # Without the trained task's texts there is nothing to keep the probe apart from.
        return ProbeSet([], [], [], {}, {name: f"trained task's data unreadable: {exc}"
                                         for name in sources}, drawn_with=_drawn_with(seed))
    probe = ProbeSet([], [], [], {}, drawn_with=_drawn_with(seed))
    for name in sources:
        task = resolve_task(name)
        try:
            _, texts, labels = _load_all(task, data_dir)
        except UserError as exc:
            probe.unavailable[name] = str(exc)
            continue
        drawn, drawn_labels = _draw(texts, labels, excluded, per_task, seed)
        excluded.update(hygiene.normalise(t) for t in drawn)
        probe.texts += drawn
        probe.tasks += [name] * len(drawn)
        probe.labels += drawn_labels
        probe.sources[name] = (str(Path(data_dir) / name / "test") if data_dir is not None
                               else f"{task.hub.path} ({task.hub.test_split})" if task.hub
                               else name)
    if not probe.texts:  # nothing readable offline: Python's own prose (module docstring)
        texts = fallback_texts()
        drawn, _ = _draw(texts, [NO_LABEL] * len(texts), excluded, len(sources) * per_task,
                         seed)
        probe.texts, probe.tasks = drawn, [FALLBACK_SOURCE] * len(drawn)
        probe.labels = [NO_LABEL] * len(drawn)
        probe.sources[FALLBACK_SOURCE] = (f"pydoc_data.topics (Python {sys.version_info[0]}."
                                          f"{sys.version_info[1]} documentation, no labels)")
    if cache:
        write_json(cached, asdict(probe))
    return probe
