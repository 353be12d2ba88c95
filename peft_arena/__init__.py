"""peft-arena: benchmark fine-tuning strategies across text-classification tasks."""

import logging
import warnings

__version__ = "0.1.0"

# bitsandbytes warns at import that an optional CPU kernel package is missing, then uses its
# built-in path, which works offline. The warning alarms users for no reason.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# PEFT reads a transformers attribute that is being renamed; the warning is not the user's.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
