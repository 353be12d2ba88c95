"""Progress bars for long loops, quiet when output is not a terminal (CI logs, pipes)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
QUIET_ENV = "PEFT_ARENA_QUIET"


def _quiet(console: Console) -> bool:
    # Off the terminal a live bar only leaves blank lines in the log.
    return bool(os.environ.get(QUIET_ENV)) or not console.is_terminal


def is_quiet() -> bool:
    """Whether progress stays off stderr (PEFT_ARENA_QUIET, or not a terminal)."""
    return _quiet(Console(stderr=True))


def track(items: Iterable[T], description: str) -> Iterator[T]:
    console = Console()
    if _quiet(console):
        yield from items
        return
    columns = (TextColumn("  [cyan]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, transient=True, console=console) as bar:
        total = len(items) if hasattr(items, "__len__") else None
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def status(description: str) -> Iterator[None]:
    """A spinner for steps with no natural count (reading a data file, tokenizing)."""
    console = Console(stderr=True)
    if _quiet(console):
        yield
        return
    with console.status(f"  [cyan]{description}"):
        yield
