"""Where the suite finds the repository, the package and the real data."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "peft_arena"
COMMITTED_RECORDS = REPO / "results" / "records"
# The real data (imdb, agnews, banking77) sits beside the clone unless said otherwise.
SHARED_DATA = Path(os.environ.get("PEFT_ARENA_SHARED_DATA", REPO.parent / "shared" / "data"))
