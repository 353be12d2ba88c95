"""Fine-tuning strategies: entries of methods.yaml, plus a short module for a method with hooks."""

from peft_arena.strategies.base import Strategy
from peft_arena.strategies.builtin import load_strategies
from peft_arena.strategies.registry import strategies

__all__ = ["Strategy", "load_strategies", "strategies"]
