"""The project's `UserError`, from wherever the package keeps it."""

from __future__ import annotations

try:  # the shared helpers' home
    from peft_arena.common.errors import UserError
except ImportError:  # the flat layout
    from peft_arena.errors import UserError

__all__ = ["UserError"]
