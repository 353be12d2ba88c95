"""Records are written atomically and read back tolerantly."""

from __future__ import annotations

import json

import pytest

from peft_arena.config.spec import CellSpec
from peft_arena.records.schema import SCHEMA_VERSION
from peft_arena.records.store import (
    iter_records,
    read_record,
    record_path,
    write_record,
)


def _record(spec: CellSpec) -> dict:
    return {"schema_version": SCHEMA_VERSION, "cell_id": spec.cell_id, "status": "ok",
            "spec": spec.to_dict(), "metrics": {"accuracy": 0.5}}


def test_round_trip(tmp_path):
    spec = CellSpec(model="minilm", task="imdb", strategy="lora", peft={"r": 8})
    path = record_path(tmp_path, spec.cell_id)
    write_record(path, _record(spec))
    back = read_record(path)
    assert CellSpec.from_dict(back["spec"]) == spec
    assert back["metrics"]["accuracy"] == 0.5
    assert not list(path.parent.glob("*.tmp"))


def test_corrupt_and_foreign_files_are_skipped(tmp_path):
    spec = CellSpec(model="minilm", task="imdb", strategy="lora")
    write_record(record_path(tmp_path, spec.cell_id), _record(spec))
    (tmp_path / "records" / "broken.json").write_text('{"schema_version": 1, "spe')
    (tmp_path / "records" / "other.json").write_text(json.dumps({"hello": "world"}))
    with pytest.warns(UserWarning, match="Skipping"):
        records = list(iter_records(tmp_path))
    assert [r["cell_id"] for r in records] == [spec.cell_id]


def test_a_failed_write_leaves_the_old_record(tmp_path):
    spec = CellSpec(model="minilm", task="imdb", strategy="lora")
    path = record_path(tmp_path, spec.cell_id)
    write_record(path, _record(spec))
    with pytest.raises(TypeError):
        write_record(path, {"bad": object.__new__(type("NoJson", (), {"__str__": None}))})
    assert read_record(path)["status"] == "ok"
    assert not list(path.parent.glob("*.tmp"))
