"""A cell's own process.

    python -m peft_arena.matrix.cell_process SPEC.json RECORD.json [DATA_DIR] [options]

Options: `--run-id ID` (stored in the record: which matrix run wrote it), `--parent-pid PID`
(die with the process that started it, see `_die_with_parent`; -1: with whichever parent
it has, as the ranks of a multi-device cell under torchrun), `--results-dir DIR` (where saved
models and tracker logs go; default: the folder above the record's), `--trust-remote-code`
(let the model run code from its own repository).

Exit status: 0 ok, 1 the cell failed (a failed record was written), 2 bad input, 130 Ctrl-C
(no record is written: the cell runs again when the matrix resumes).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from pathlib import Path

from peft_arena.common.errors import UserError
from peft_arena.config.spec import CellSpec

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when the matrix process dies, even by SIGKILL.

    An orphaned cell would keep training and hold memory while a rerun starts the same cell
    again. Elsewhere the inherited cell lock still stops a rerun from running it twice.
    """
    if parent_pid is None:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid != -1 and os.getppid() != parent_pid:  # the matrix died before we asked
        os._exit(1)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m peft_arena.matrix.cell_process")
    parser.add_argument("spec_file", type=Path)
    parser.add_argument("record_file", type=Path)
    parser.add_argument("data_dir", nargs="?", default="")
    parser.add_argument("--run-id")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--results-dir", type=Path)
    parser.add_argument("--trust-remote-code", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    _die_with_parent(args.parent_pid)
    try:
        spec = CellSpec.from_dict(json.loads(args.spec_file.read_text(encoding="utf-8")))
        # Loaded here, not at the top: torch takes seconds to import, and Ctrl-C during the
        # import must end the cell as quietly as Ctrl-C during training.
        from peft_arena.cell.entry import run_and_record
        from peft_arena.matrix.search import trial_reporter_from_env

        run_and_record(spec, args.record_file, args.data_dir or None, run_id=args.run_id,
                       trust_remote_code=args.trust_remote_code, results_dir=args.results_dir,
                       on_evaluate=trial_reporter_from_env())
    except KeyboardInterrupt:
        return 130  # the matrix process reports what finished and how to resume
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        print(f"cell failed: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # between the handlers above: still a quiet Ctrl-C
        sys.exit(130)
