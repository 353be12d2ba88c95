"""The data-hygiene section in the leaderboard: counts per task, a leaking test split flagged,
leaks that were dropped not flagged."""

from __future__ import annotations

from pathlib import Path

from peft_arena.data import hygiene
from tests.support.records import make_record

# --- the leaderboard --------------------------------------------------------------------------


def _hygiene(leaked: int, used_train: int, dropped_leaks: bool = False) -> dict:
    return {
        "text_match": hygiene.TEXT_MATCH, "on_bad_rows": "drop", "drop_test_leaks": dropped_leaks,
        "dropped": {"train": {"empty_text": 3, "missing_label": 1},
                    "test": {"in_train": leaked} if dropped_leaks else {}},
        "full": {"train": {"rows": 25000, "duplicates": 96},
                 "test": {"rows": 25000, "duplicates": 199, "in_train": leaked}},
        "used": {"train": {"rows": used_train, "duplicates": 0},
                 "val": {"rows": 23, "duplicates": 0, "in_train": 1},
                 "test": {"rows": 100, "duplicates": 0, "in_train": 0}},
        "test_leaks_into_train": leaked > 0 and not dropped_leaks,
    }


def _board(tmp_path: Path, records: list[dict]) -> str:
    from peft_arena.records import store
    from peft_arena.report import build

    for record in records:
        store.write_record(store.record_path(tmp_path, record["cell_id"]), record)
    return build.build_report(tmp_path, chart_links=False).paths[0].read_text()


def test_leaderboard_shows_hygiene_per_task_and_flags_a_leaking_test_split(tmp_path):
    imdb = [make_record("imdb", s, 0, 0.85) for s in ("lora", "full")]
    imdb[0]["data_hygiene"] = _hygiene(123, 200)
    imdb[1]["data_hygiene"] = _hygiene(123, 400)
    agnews = make_record("agnews", "lora", 0, 0.9)
    agnews["data_hygiene"] = _hygiene(0, 200)
    old = make_record("agnews", "ia3", 0, 0.8)  # a record from before the section existed
    board = _board(tmp_path, [*imdb, agnews, old])
    imdb_table, agnews_table = board.split("## imdb")[1], board.split("## imdb")[0]
    assert "⚠ **Test split leaks into train**: 123 of 25,000 test rows (0.49%)" in (
        imdb_table.split("## ")[0])
    assert "Test split leaks" not in agnews_table
    details = board.split("### imdb")[1]
    assert "| full | test | 25,000 | 199 | 123 | 0 |" in details
    assert "| full | train | 25,000 | 96 | — | 4 (empty_text 3, missing_label 1) |" in details
    # Cells that used different rows are listed apart.
    assert "| used (full) | train | 400 | 0 | — | — |" in details
    assert "| used (lora) | val | 23 | 0 | 1 | — |" in details


def test_dropped_leaks_are_not_flagged(tmp_path):
    record = make_record("imdb", "lora", 0, 0.85)
    record["data_hygiene"] = _hygiene(123, 200, dropped_leaks=True)
    board = _board(tmp_path, [record])
    assert "Test split leaks" not in board
    assert "| full | test | 25,000 | 199 | 123 | 123 (in_train 123) |" in board
