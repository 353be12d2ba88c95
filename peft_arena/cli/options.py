"""Options that several commands share, declared once: each is a decorator, and a command
that words its help differently passes its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from peft_arena.api import PRECISIONS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def model(help: str = "Model alias (minilm, smollm2), local folder, GGUF file or Hub id. "
          "Default: the preset's.") -> Decorator:
    return click.option("--model", help=help)


def preset(help: str = "Preset name or YAML file.") -> Decorator:
    return click.option("--preset", default="quick", show_default=True, help=help)


def epochs(help: str = "Training epochs for every cell.") -> Decorator:
    return click.option("--epochs", type=float, help=help)


def max_train_samples(help: str = "Seeded, stratified training subset size.") -> Decorator:
    return click.option("--max-train-samples", type=int, help=help)


def max_eval_samples(help: str = "Cap on validation and test examples.") -> Decorator:
    return click.option("--max-eval-samples", type=int, help=help)


def precision(help: str | None = None) -> Decorator:
    return click.option("--precision", type=click.Choice(PRECISIONS), help=help)


def data_dir(help: str = "Read DIR/<task>/{train,test}.{jsonl,csv,parquet} instead of the Hub "
             "[env: PEFT_ARENA_DATA_DIR].") -> Decorator:
    return click.option("--data-dir", envvar="PEFT_ARENA_DATA_DIR", type=click.Path(),
                        help=help)


def results(help: str) -> Decorator:
    return click.option("--results", "results_dir", default="results", show_default=True,
                        type=click.Path(file_okay=False), help=help)


def sets(help: str) -> Decorator:
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help)
