"""Markdown pieces every report section uses: escaped table rows and a dash for no value."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

DASH = "—"


def escape(text: Any) -> str:
    """A table cell's text: a '|' in a name would split the cell."""
    return str(text).replace("|", "\\|")


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table's lines, every header and cell escaped."""
    lines = ["| " + " | ".join(map(escape, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return lines


def number(value: Any, fmt: Callable[[float], str]) -> str:
    """`value` formatted, or a dash where it was not recorded (never a 0)."""
    if pd.isna(value) or not math.isfinite(float(value)):
        return DASH
    return fmt(float(value))
