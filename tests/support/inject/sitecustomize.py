"""Run by Python at the start of every process whose PYTHONPATH begins with this folder
(see tests.support.faults.fault_env): fault injection for cell processes."""

import os
import sys

if os.environ.get("PEFT_ARENA_FAULT"):
    from tests.support.faults import install_in_cell_process

    install_in_cell_process(sys.argv)
