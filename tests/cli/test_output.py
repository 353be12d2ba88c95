"""Output that fits where it goes: piped or logged, tables print whole, one row per line."""

from __future__ import annotations

from types import SimpleNamespace

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


def _outcome(seed: int, retention: dict | None) -> SimpleNamespace:
    record = {"metrics": {"accuracy": 0.5, "macro_f1": 0.5}, "resolved": {},
              "spec": {"measure_retention": True}}
    if retention is not None:
        record["retention"] = retention
    return SimpleNamespace(spec=SimpleNamespace(task="mine", strategy="lora", seed=seed),
                           status="ok", seconds=1.0, record=record)


def test_a_cell_without_retention_figures_says_why_in_one_line(capsys):
    from peft_arena.cli.output import RunLog, print_event

    log = RunLog()
    print_event("end", 1, 2, _outcome(0, {"measured": False,
                                          "reason": "no probe texts: imdb: not found"}), log=log)
    print_event("end", 2, 2, _outcome(1, {"measured": True, "cka": 0.9}), log=log)
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    missing = [line for line in lines if line.startswith("no retention figures")]
    assert missing == ["no retention figures: no probe texts: imdb: not found"]


def test_a_cell_header_is_printed_once_when_nothing_came_between(capsys):
    from peft_arena.cli.output import RunLog, print_event

    log = RunLog()
    outcome = _outcome(0, {"measured": True})
    print_event("start", 1, 2, outcome, log=log)
    print_event("end", 1, 2, outcome, log=log)
    print_event("start", 2, 2, _outcome(1, None), log=log)
    print_event("start", 3, 3, _outcome(2, None), log=log)  # a parallel cell started between
    print_event("end", 2, 2, _outcome(1, None), log=log)
    headers = [line.strip() for line in capsys.readouterr().out.splitlines()
               if line.strip().startswith("[")]
    assert headers == ["[1/2] mine · lora · seed 0", "[2/2] mine · lora · seed 1",
                       "[3/3] mine · lora · seed 2", "[2/2] mine · lora · seed 1"]
