"""The `peft-arena` command line (cli/commands.py), its shared options (cli/options.py) and
what it prints (cli/output.py)."""

from peft_arena.cli.commands import cli, main
from peft_arena.cli.output import console, err_console
from peft_arena.cli.output import plan_table as _plan_table  # the names older callers use
from peft_arena.cli.output import print_event as _print_event

__all__ = ["_plan_table", "_print_event", "cli", "console", "err_console", "main"]
