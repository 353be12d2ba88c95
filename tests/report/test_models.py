"""Reports over records of more than one model: tables and charts keep the models apart."""

from __future__ import annotations

from peft_arena.config.spec import CellSpec
from peft_arena.report import build as report
from peft_arena.report.results import load_frame, model_label, summarise
from tests.support.records import make_record, write


def _as_model(record: dict, model: str) -> dict:
    record["spec"]["model"] = model
    record["cell_id"] = CellSpec.from_dict(record["spec"]).cell_id
    return record


def test_two_models_get_rows_and_labels_of_their_own(tmp_path):
    for model, accuracy in (("minilm", 0.80), ("smollm2", 0.90)):
        for strategy in ("lora", "ia3"):
            write(tmp_path, _as_model(make_record("agnews", strategy, 0, accuracy), model))
    write(tmp_path, _as_model(make_record("agnews", "full", 0, 0.85), "minilm"))
    summary = summarise(load_frame(tmp_path))
    assert sorted(summary["strategy"]) == ["minilm full", "minilm ia3", "minilm lora",
                                          "smollm2 ia3", "smollm2 lora"]
    assert summary.groupby("strategy")["n_seeds"].sum().eq(1).all()  # nothing pooled
    board = next(p for p in report.build_report(tmp_path).paths
                 if p.name == "leaderboard.md").read_text()
    assert "smollm2 lora" in board and "minilm full" in board


def test_dequantized_weights_are_named_in_the_provenance(tmp_path):
    record = _as_model(make_record("agnews", "lora", 0, 0.9), "smollm2")
    record["resolved"]["model_source"] = {"format": "gguf", "quantization": "Q4_1",
                                          "dequantized": True}
    write(tmp_path, record)
    board = next(p for p in report.build_report(tmp_path).paths
                 if p.name == "leaderboard.md").read_text()
    assert "weights: GGUF Q4_1, dequantized (not the original bf16 checkpoint)" in board


def test_one_model_keeps_plain_strategy_names(tmp_path):
    for strategy in ("lora", "ia3"):
        write(tmp_path, _as_model(make_record("agnews", strategy, 0, 0.8), "smollm2"))
    assert sorted(summarise(load_frame(tmp_path))["strategy"]) == ["ia3", "lora"]


def test_model_labels():
    assert model_label("minilm") == "minilm"
    assert model_label("/cache/gguf/SmolLM2-360M.Q8_0.gguf") == "SmolLM2-360M.Q8_0.gguf"
    assert model_label("/models/qwen/") == "qwen"
    assert model_label("Qwen/Qwen2.5-0.5B") == "Qwen2.5-0.5B"


def test_each_model_has_its_own_marker_shape_in_the_trade_off_charts():
    import pandas as pd

    from peft_arena.report.views.charts import markers_by_label

    frame = pd.DataFrame({"model": ["minilm", "minilm", "smollm2", "smollm2"],
                          "label": ["minilm full", "minilm lora", "smollm2 lora",
                                    "smollm2 ia3"]})
    markers = markers_by_label(frame, "label")
    assert markers["minilm full"] == markers["minilm lora"]
    assert markers["smollm2 lora"] == markers["smollm2 ia3"] != markers["minilm lora"]
    one_model = frame.assign(model="minilm")
    assert set(markers_by_label(one_model, "label").values()) == {"o"}
