"""peft-arena: benchmark fine-tuning strategies across text-classification tasks."""

import warnings

from peft_arena.common import library_logs

__version__ = "0.1.0"

# bitsandbytes warns at import (which PEFT triggers in every cell) that an optional fused CPU
# kernel is not at hand, then uses its built-in path, which works offline. The warnings are
# kept off the terminal; a 4-bit cell says in one line which kernel ran (model/four_bit.py).
library_logs.install()

# PEFT reads a transformers attribute that is being renamed; the warning is not the user's.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
