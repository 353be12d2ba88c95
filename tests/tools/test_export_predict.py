"""Save a trained cell, export it (adapter or merged), and label files with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_arena.cell.entry import run_and_record
from peft_arena.cli import cli
from peft_arena.common.errors import UserError
from peft_arena.model.saving import saved_model_dir
from peft_arena.records.store import record_path
from peft_arena.tools.export import export_model
from peft_arena.tools.predict import load_for_inference, predict_file
from tests.support.specs import tiny_spec
from tests.support.synthetic import KEYWORDS, synthetic_rows


def _trained_cell(results, tiny_bert, synth_task, data_dir, strategy: str, **settings):
    # fp32 so that the merged and the unmerged model may be compared to float precision.
    spec = tiny_spec(tiny_bert, synth_task, strategy, epochs=2, max_train_samples=90,
                     max_eval_samples=None, save_model=True, **settings)
    path = record_path(results, spec.cell_id)
    run_and_record(spec, path, data_dir)
    return spec, path


@pytest.fixture(scope="module")
def lora_cell(tmp_path_factory, tiny_bert, synth_task, data_dir):
    results = tmp_path_factory.mktemp("results")
    spec, path = _trained_cell(results, tiny_bert, synth_task, data_dir, "lora",
                               peft={"r": 4, "lora_alpha": 8, "target_modules": None})
    return results, spec, path


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**batch).logits


def test_save_model_keeps_the_adapter_next_to_the_record(lora_cell):
    results, spec, path = lora_cell
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    folder = saved_model_dir(results, spec.cell_id)
    assert record["artifacts"]["model_dir"] == f"models/{spec.cell_id}"
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").stat().st_size < 200_000  # adapter only
    assert json.loads((folder / "peft_arena.json").read_text())["label_names"] == KEYWORDS


def test_merged_model_predicts_what_the_adapter_predicts(lora_cell, tmp_path):
    _, spec, path = lora_cell
    assert export_model(path, tmp_path / "adapter") == "adapter"
    assert export_model(path, tmp_path / "merged", merge=True) == "merged"
    # The merged folder is a plain transformers model: no PEFT, labels in its config.
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert merged.config.id2label == dict(enumerate(KEYWORDS))
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    adapter = load_for_inference(tmp_path / "adapter")
    texts = [row["text"] for row in synthetic_rows(24, seed=7)]
    expected = _logits(adapter.model, adapter.tokenizer, texts)
    got = _logits(merged, tokenizer, texts)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    # The trained adapter is not a no-op: the base alone predicts differently.
    base = AutoModelForSequenceClassification.from_pretrained(spec.model)
    assert not torch.allclose(_logits(base, tokenizer, texts), expected, atol=1e-3)


def test_predictions_reproduce_the_recorded_test_accuracy(lora_cell, tmp_path, data_dir):
    _, _, path = lora_cell
    export_model(path, tmp_path / "merged", merge=True)
    test_file = data_dir / "synth" / "test.jsonl"
    out = tmp_path / "preds.csv"
    predict_file(tmp_path / "merged", test_file, out, with_names=True, batch_size=7)
    preds = pd.read_csv(out)
    truth = pd.read_json(test_file, lines=True)
    assert list(preds.columns) == ["ID", "label", "label_name", "confidence"]
    assert preds["ID"].tolist() == list(range(len(truth)))  # row numbers, in input order
    assert (preds["label_name"] == [KEYWORDS[i] for i in preds["label"]]).all()
    assert preds["confidence"].between(1 / len(KEYWORDS), 1).all()
    accuracy = float(np.mean(preds["label"].to_numpy() == truth["label"].to_numpy()))
    assert accuracy == json.loads(path.read_text())["metrics"]["accuracy"]


def test_export_without_saved_weights_says_how_to_get_them(lora_cell, tmp_path):
    _, _, path = lora_cell
    copy = tmp_path / "records" / path.name
    copy.parent.mkdir()
    copy.write_text(path.read_text())
    with pytest.raises(UserError, match="--save-model"):
        export_model(copy, tmp_path / "out")


def test_qlora_merges_into_a_dequantized_base(tmp_path, tiny_bert, synth_task, data_dir):
    _, path = _trained_cell(tmp_path, tiny_bert, synth_task, data_dir, "qlora",
                            peft={"r": 4, "lora_alpha": 8, "target_modules": None})
    export_model(path, tmp_path / "merged", merge=True)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    export_model(path, tmp_path / "adapter")
    adapter = load_for_inference(tmp_path / "adapter")  # on the 4-bit base, as trained
    texts = [row["text"] for row in synthetic_rows(24, seed=7)]
    expected = _logits(adapter.model, adapter.tokenizer, texts)
    got = _logits(merged, AutoTokenizer.from_pretrained(tmp_path / "merged"), texts)
    # The merged weights are the de-quantized 4-bit ones plus the adapter: the same function.
    # (Merging into the original full-precision weights instead is off by ~0.8 here.)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # three CLI processes and a cell process: about 50 s on 2 busy cores
def test_cli_budget_save_export_predict(tmp_path, tiny_bert, synth_task):
    env = {**os.environ, "PEFT_ARENA_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    results = tmp_path / "results"
    # Full fine-tuning of the tiny model trains ~1M parameters, LoRA a few thousand.
    done = subprocess.run(
        [sys.executable, "-m", "peft_arena", "run", "--matrix", str(synth_task),
         "--strategies", "full,lora", "--model", str(tiny_bert), "--epochs", "1",
         "--max-train-samples", "60", "--results", str(results), "--precision", "fp32",
         "--set", "learning_rate=1e-2", "--set", "batch_size=8",
         "--max-trainable-params", "100K", "--save-model",
         "--eval-every", "2", "--early-stopping-patience", "1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # The full cell is counted and skipped before any training.
    assert "skipped, over budget: 997,635 trainable parameters > budget 100,000" in done.stdout
    assert "1 ok, 1 over budget" in done.stdout
    [record] = list((results / "records").glob("*.json"))  # the skipped cell wrote nothing
    data = json.loads(record.read_text())
    assert data["spec"]["strategy"] == "lora"
    assert data["spec"]["eval_every"] == "2" and data["spec"]["early_stopping_patience"] == 1
    steps = [e["step"] for e in data["history"]]
    assert steps[0] == 2 and all(step % 2 == 0 for step in steps[:-1])

    runner = CliRunner()
    exported = runner.invoke(cli, ["export", str(record), "--out", str(tmp_path / "model"),
                                   "--merge"])
    assert exported.exit_code == 0, exported.output
    assert "wrote merged model" in exported.output
    inputs = tmp_path / "texts.csv"
    pd.DataFrame({"id": ["a", "b"], "body": ["an apple of the", "river in a"]}).to_csv(
        inputs, index=False)
    predicted = runner.invoke(cli, ["predict", "--model", str(tmp_path / "model"), "--input",
                                    str(inputs), "--out", str(tmp_path / "preds.csv"),
                                    "--text-column", "body", "--id-column", "id"])
    assert predicted.exit_code == 0, predicted.output
    assert "2 predictions" in predicted.output
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["ID", "label"]
    assert preds["ID"].tolist() == ["a", "b"]
    assert set(preds["label"]) <= {0, 1, 2}


def test_predict_names_a_missing_column(lora_cell, tmp_path):
    results, spec, _ = lora_cell
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"sentence": "apple"}\n')
    with pytest.raises(UserError, match="no column 'text'"):
        predict_file(saved_model_dir(results, spec.cell_id), inputs, tmp_path / "out.csv")
