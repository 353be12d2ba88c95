"""The probe set of the retention figures: general texts, their source task and label.
data.probe_texts draws it; measure.retention reads it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ProbeSet:
    """Texts with their source task and that task's label id."""

    texts: list[str]
    tasks: list[str]
    labels: list[int]
    sources: dict[str, str]  # task -> where its texts came from (folder or Hub data set)
    unavailable: dict[str, str] = field(default_factory=dict)  # task -> why it was left out
    drawn_with: dict[str, Any] = field(default_factory=dict)  # seed, how texts were compared

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def digest(self) -> str:
        """Hash of the texts, their tasks and labels: names the set in records and caches."""
        blob = json.dumps([self.texts, self.tasks, self.labels], ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def indices_of(self, task: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.tasks) == task)

    def describe(self) -> dict[str, Any]:
        """The record's description of the set (its texts stay in the cache)."""
        counts = {task: len(self.indices_of(task)) for task in self.sources}
        return {"hash": self.digest, "texts": len(self), "per_task": counts,
                "sources": self.sources, "unavailable": self.unavailable, **self.drawn_with}
