"""Output that fits where it goes: piped or logged, tables print whole, one row per line."""

from __future__ import annotations

from tests.support.cli import peft_arena
from tests.support.records import make_record, write

ELLIPSIS = "…"


def _row(output: str, *cells: str) -> str:
    """The one markdown row that holds every one of `cells` as a whole cell."""
    rows = [line for line in output.splitlines()
            if line.startswith("| ") and all(f"| {cell} |" in line for cell in cells)]
    assert len(rows) == 1, output
    return rows[0]


def test_piped_report_prints_every_row_whole(tmp_path):
    # Two configs of one strategy get long labels (strategy@hash): the table is wider than 80.
    for seed in (0, 1):
        write(tmp_path, make_record("imdb", "lora", seed, 0.85))
        write(tmp_path, make_record("imdb", "lora", seed, 0.80, learning_rate=1e-3))
        write(tmp_path, make_record("imdb", "ia3", seed, 0.75))
    done = peft_arena("report", "--results", tmp_path, "--out", tmp_path / "out", columns=80)
    assert done.returncode == 0, done.stderr
    assert ELLIPSIS not in done.stdout
    labels = [line.split(" | ")[2] for line in done.stdout.splitlines()
              if line.startswith("| imdb | classification |")]
    assert len(labels) == 3 and sum(label.startswith("lora@") for label in labels) == 2
    row = _row(done.stdout, "imdb", "ia3")
    assert len(row) > 80 and row.endswith("| ok |")  # wider than the pipe's 80, not folded
    assert "0.750" in row


def test_piped_dry_run_prints_each_cell_on_one_line(tmp_path):
    modules = "[query,key,value,attention.output.dense,intermediate.dense]"
    done = peft_arena("run", "--matrix", "banking77", "--strategies", "lora,ia3", "--dry-run",
                      "--set", f"lora.target_modules={modules}", "--results", tmp_path,
                      columns=80)
    assert done.returncode == 0, done.stderr
    assert ELLIPSIS not in done.stdout
    assert done.stdout.startswith("2 cells")
    row = _row(done.stdout, "banking77", "lora", "0")  # the seed: the plan, not the estimate
    settings = row.split(" | ")[4]
    assert "target_modules=['query', 'key', 'value', 'attention.output.dense', " \
           "'intermediate.dense']" in settings
    assert "lr=" in row.split(" | ")[3] and row.count(" | ") == 7  # all 8 columns, one line
    assert _row(done.stdout, "banking77", "lora", "32 x 64").count(" | ") == 7  # the estimate
