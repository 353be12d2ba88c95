"""One cell's steps: the runner (classification), the generative steps, retention."""

# The generative steps register themselves with the runner (runner.CELL_KINDS) on import.
from peft_arena.cell import generative  # noqa: F401
