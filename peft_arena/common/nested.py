"""Tolerant reading of nested mappings, for records written by older or other versions."""

from __future__ import annotations

from typing import Any


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]..., or None as soon as a level is missing or is not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
