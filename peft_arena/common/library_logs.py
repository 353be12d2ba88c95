"""Keep two import-time warnings of bitsandbytes off the user's terminal, and remember them.

PEFT imports bitsandbytes whenever it is installed, so every cell (LoRA included) imports it.
On a CPU with AVX512-BF16, bitsandbytes then asks the `kernels` package for an optional fused
4-bit kernel from the Hub repository kernels-community/quantization-bitsandbytes, and logs
two warnings when it cannot have it: `kernels` says it skips the publisher check (offline),
bitsandbytes says the kernel failed to load. Neither changes a result: without the fused
kernel bitsandbytes uses its own CPU kernels. So the two records are taken off the loggers
here (installed by the package's `__init__`, before anything imports PEFT) and kept, and a
cell that does load 4-bit weights says in one line of its own which kernel ran
(`model/four_bit.py`).
"""

from __future__ import annotations

import logging

# (logger, what its record's message starts with): the two import-time warnings.
_CAPTURED = (
    ("kernels._internals.hf_hub",
     "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
)

captured: list[str] = []  # the messages taken off the loggers in this process, in order


class _Capture(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.prefix):
            captured.append(message)
            return False  # not emitted
        return True


def install() -> None:
    """Put the capturing filters on the two loggers (once per process)."""
    for name, prefix in _CAPTURED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Capture) for f in logger.filters):
            logger.addFilter(_Capture(prefix))
