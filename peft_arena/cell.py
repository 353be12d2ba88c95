"""A cell's own process: `python -m peft_arena.cell SPEC.json RECORD.json [DATA_DIR]`.

Exit status: 0 ok, 1 the cell failed (a failed record was written), 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from peft_arena.errors import UserError
from peft_arena.runner import run_and_record
from peft_arena.spec import CellSpec


def main(argv: list[str]) -> int:
    spec = CellSpec.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    data_dir = argv[2] if len(argv) > 2 and argv[2] else None
    try:
        run_and_record(spec, Path(argv[1]), data_dir)
    except KeyboardInterrupt:
        return 130  # the matrix process reports what finished and how to resume
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except Exception as exc:
        print(f"cell failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
