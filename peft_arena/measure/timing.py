"""Wall time per phase of a cell (data, tokenize, model, train, eval)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class PhaseTimer:
    """Wall time per named phase.

    A phase opened inside another pauses the outer one, so phases never overlap and their sum
    accounts for the run. `current` names the phase a failure happened in: the innermost open
    phase, or the last one that ended.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock  # seconds; injectable so that tests need not sleep
        self.start = clock()
        self.phases: dict[str, float] = {}
        self.current = "setup"
        self._open: list[list[Any]] = []  # [name, time it started or last resumed]

    def _add(self, name: str, seconds: float) -> None:
        self.phases[f"{name}_s"] = self.phases.get(f"{name}_s", 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        now = self.clock()
        if self._open:  # pause the enclosing phase
            outer = self._open[-1]
            self._add(outer[0], now - outer[1])
        self._open.append([name, now])
        self.current = name
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            now = self.clock()
            _, resumed = self._open.pop()
            self._add(name, now - resumed)
            if self._open:  # resume the enclosing phase
                self._open[-1][1] = now
                if not failed:
                    self.current = self._open[-1][0]

    def total(self) -> float:
        return self.clock() - self.start
