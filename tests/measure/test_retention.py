"""Retention of the base model (measure.retention, cell.probe_texts) and the weight update
(measure.weight_update), on tiny random models and small synthetic task folders."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from peft_arena.common.errors import UserError
from peft_arena.config.tasks import resolve_task
from peft_arena.data import hygiene
from peft_arena.data.probe_texts import FALLBACK_SOURCE, NO_LABEL, draw_probe_set
from peft_arena.measure import retention, weight_update
from tests.support.paths import COMMITTED_RECORDS
from tests.support.specs import tiny_spec

# ---------------------------------------------------------------- CKA


def test_cka_is_one_for_the_same_features_rotated_and_scaled():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert retention.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert retention.linear_cka(x, 3.5 * x @ rotation) == pytest.approx(1.0, abs=1e-12)
    assert retention.linear_cka(x, x + 10.0) == pytest.approx(1.0, abs=1e-12)  # centred
    assert retention.linear_cka(x, rng.normal(size=(60, 8))) < 0.5


def test_cka_of_a_hand_computed_3x2_case():
    # Both already centred (every column sums to 0).
    #   X^T X = [[2, 1], [1, 2]]  -> ||X^T X||_F = sqrt(4 + 1 + 1 + 4) = sqrt(10)
    #   Y^T Y = [[2, 0], [0, 0]]  -> ||Y^T Y||_F = 2
    #   Y^T X = [[2, 1], [0, 0]]  -> ||Y^T X||_F^2 = 5
    #   CKA = 5 / (2 sqrt(10)) = sqrt(10) / 4 = 0.790569...
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    assert retention.linear_cka(x, y) == pytest.approx(math.sqrt(10) / 4, rel=1e-12)


def _tiny_inputs(tokenizer, n: int = 48) -> retention.Encoded:
    rng = random.Random(3)
    words = ["bank", "card", "river", "match", "film", "price", "goal", "the", "a", "of"]
    texts = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(n)]
    return retention.Encoded.of(tokenizer, texts, 32)


def _load(path: Path, labels: int = 3):
    from peft_arena.model.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(path))
    model = load_model(str(path), [f"c{i}" for i in range(labels)], on_gpu=False,
                       pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def test_cka_of_an_untouched_body_is_one_and_drops_after_training(tiny_bert):
    model, tokenizer = _load(tiny_bert)
    twin, _ = _load(tiny_bert)
    encoded = _tiny_inputs(tokenizer)
    pad = tokenizer.pad_token_id

    def features(m):
        return retention.run_body(retention.body_of(m), encoded, pad, last_token=False).features

    base = features(model)
    assert retention.linear_cka(base, features(twin)) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        ids = torch.randint(1000, 2000, (8, 12))
        loss = model(input_ids=ids, labels=torch.randint(0, 3, (8,))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned = retention.linear_cka(base, features(model))
    assert 0.0 < tuned < 0.99


# ---------------------------------------------------------------- the transfer probe


def test_the_probe_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=80)
    features = rng.normal(size=(80, 16)) + labels[:, None] * 0.4
    first = retention.probe_accuracy(features, labels, seed=0)
    assert first == retention.probe_accuracy(features, labels, seed=0)
    assert 0.25 < first <= 1.0  # the planted signal is learnable


# ---------------------------------------------------------------- the LM head


def _tiny_causal_llama(folder: Path):
    """A tiny Llama language model with tied embeddings, saved with its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_decoders import synthetic_texts, train_tokenizer

    tokenizer = train_tokenizer(synthetic_texts())
    torch.manual_seed(0)
    causal = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, initializer_range=0.2))
    causal.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return causal


def test_base_body_with_its_own_head_gives_the_base_models_lm_loss(tmp_path):
    from peft_arena.model.loading import load_tokenizer
    from tests.support.tiny_decoders import synthetic_texts

    causal = _tiny_causal_llama(tmp_path)
    model, _ = _load(tmp_path, labels=2)  # the sequence-classification twin
    body = retention.body_of(model)
    head, source = retention.language_model_head(str(tmp_path), body.config, body)
    assert source == "tied input embeddings of the checkpoint"
    prepared = load_tokenizer(str(tmp_path))
    texts = synthetic_texts(12)
    encoded = retention.Encoded.of(prepared, texts, 24)
    outputs = retention.run_body(body, encoded, prepared.pad_token_id, last_token=True,
                                 lm_head=head)
    # The causal model's own loss, text by text (no padding), weighted by predicted tokens.
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ids in encoded.input_ids:
            ids_t = torch.tensor([ids])
            total += float(causal(input_ids=ids_t, labels=ids_t).loss) * (len(ids) - 1)
            tokens += len(ids) - 1
    assert outputs.lm_tokens == tokens
    assert outputs.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_a_pruned_untouched_decoder_keeps_its_perplexity(tmp_path, builtin_data):
    """The cell prunes a decoder's last layer to the position its head reads; retention reads
    every position through the LM head, so it must see the layer whole: an untouched model,
    pruned as a cell prunes it, keeps perplexity ratio 1 and CKA 1."""
    from peft_arena.cell.retention_step import measure_retention
    from peft_arena.config.spec import CellSpec
    from peft_arena.model.last_token import compute_last_layer_for_last_token
    from peft_arena.model.loading import load_tokenizer

    _tiny_causal_llama(tmp_path / "llama")
    model, _ = _load(tmp_path / "llama", labels=4)
    assert compute_last_layer_for_last_token(model)
    tokenizer = load_tokenizer(str(tmp_path / "llama"))
    spec = CellSpec(model=str(tmp_path / "llama"), task="agnews", strategy="full",
                    max_length=24)
    kept = measure_retention(spec, model, tokenizer=tokenizer,
                             label_names=[f"c{i}" for i in range(4)],
                             pad_id=tokenizer.pad_token_id, data_dir=builtin_data,
                             is_peft=False, precision_name="fp32").retention
    assert kept["measured"], kept
    assert kept["lm"]["perplexity_ratio"] == pytest.approx(1.0, rel=1e-4)
    assert kept["cka"] == pytest.approx(1.0, abs=1e-5)
    # The pruning is back in place for whatever runs after the measurement.
    layer = model.model.layers[-1]
    assert layer.first_token_only and "forward" in vars(layer)


def test_an_encoder_says_why_it_has_no_lm_figure(tiny_bert, tmp_path):
    from transformers import BertForMaskedLM

    model, _ = _load(tiny_bert)
    body = retention.body_of(model)
    head, reason = retention.language_model_head(str(tiny_bert), body.config, body)
    assert head is None and "holds no MLM head" in reason
    BertForMaskedLM(body.config).save_pretrained(tmp_path)
    head, reason = retention.language_model_head(str(tmp_path), body.config, body)
    assert head is None and "with an MLM head" in reason


# ---------------------------------------------------------------- the weight update


def _lora(model, r: int):
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=8,
                                            target_modules=["query", "value"]))


def test_lora_delta_is_b_a_scaling_exactly_with_rank_at_most_r(tiny_bert):
    model, _ = _load(tiny_bert)
    torch.manual_seed(0)
    lora = _lora(model, r=2)
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # zero at initialisation: give it an update to measure
            torch.nn.init.normal_(param, std=0.5)
    skipped: dict[str, str] = {}
    updates = list(weight_update._peft_updates(lora, skipped))
    assert len(updates) == 4 and not skipped  # 2 layers x query, value
    layers = dict(lora.named_modules())
    for update in updates:
        layer = layers[f"base_model.model.{update.name}"]
        expected = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight
                    * layer.scaling["default"])
        assert torch.equal(update.delta, expected.double())
        assert update.factors is not None
    section = weight_update.weight_update_section(lora, str(tiny_bert))
    ranks = [m["effective_rank"] for m in section["modules"].values()]
    assert all(0 < rank <= 2 + 1e-9 for rank in ranks)
    assert section["summary"]["modules"] == 4


def _train(model, steps: int = 8, lr: float = 0.05) -> None:
    torch.manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    for _ in range(steps):
        ids = torch.randint(1000, 3000, (16, 12))
        loss = model(input_ids=ids, labels=torch.randint(0, 3, (16,))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.slow
def test_full_fine_tuning_updates_have_higher_rank_than_lora_r2(tiny_bert_body):
    tiny_bert = tiny_bert_body  # its checkpoint's keys lack the `bert.` prefix: both are read
    full, _ = _load(tiny_bert)
    _train(full, lr=1e-3)
    lora_model, _ = _load(tiny_bert)
    lora = _lora(lora_model, r=2)
    _train(lora, lr=1e-2)
    full_section = weight_update.weight_update_section(full, str(tiny_bert))
    lora_section = weight_update.weight_update_section(lora, str(tiny_bert))
    assert full_section["source"] == "tuned minus checkpoint weights"
    # Every linear weight of the body moved: 2 layers x (q, k, v, o, intermediate, output)
    # and the pooler.
    assert full_section["summary"]["modules"] == 13
    assert (full_section["summary"]["effective_rank_mean"]
            > 2 * lora_section["summary"]["effective_rank_max"])


def test_a_planted_orthogonal_direction_is_one_intruder():
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator, dtype=torch.float64))
    base = q @ torch.diag(torch.linspace(10, 1, 32, dtype=torch.float64)) @ r.T
    vectors = weight_update.left_singular_vectors(base)
    # Spread evenly over 16 of W's singular vectors: |cosine| 0.25 with each, none above.
    planted = q[:, 16:].sum(dim=1) / 4
    delta = 50 * torch.outer(planted, r[:, 0])
    assert weight_update.intruder_count(vectors, base) == 0
    assert weight_update.intruder_count(vectors, base + delta) == 1
    exact = torch.linalg.svd(base + delta).U[:, :10]
    fast = weight_update.top_left_vectors(base + delta, 10)
    # The float32 top vectors are the exact ones to within a sliver of the 0.5 threshold.
    assert (exact.T.float() @ fast).abs().diag().min() > 0.999


def test_base_singular_vectors_match_the_svd_on_either_side():
    generator = torch.Generator().manual_seed(2)
    for shape in ((12, 30), (30, 12)):
        matrix = torch.randn(*shape, generator=generator, dtype=torch.float64)
        vectors = weight_update.left_singular_vectors(matrix)
        exact = torch.linalg.svd(matrix, full_matrices=False).U
        assert vectors.shape == exact.shape
        assert torch.allclose((exact.T @ vectors).abs().diag(),
                              torch.ones(exact.shape[1], dtype=torch.float64), atol=1e-8)


def test_ia3_update_is_the_scaled_weight_minus_the_weight(tiny_bert):
    from peft import IA3Config, TaskType, get_peft_model

    model, _ = _load(tiny_bert)
    ia3 = get_peft_model(model, IA3Config(task_type=TaskType.SEQ_CLS,
                                          target_modules=["key", "value", "output.dense"],
                                          feedforward_modules=["output.dense"]))
    for name, param in ia3.named_parameters():
        if "ia3_l" in name:
            torch.nn.init.uniform_(param, 0.5, 1.5)
    layers = dict(ia3.named_modules())
    updates = list(weight_update._peft_updates(ia3, {}))
    assert updates
    for update in updates:
        layer = layers[f"base_model.model.{update.name}"]
        weight = layer.get_base_layer().weight.detach().double()
        merged_copy = layer.get_base_layer().weight.detach().clone()
        layer.merge()
        merged = layer.get_base_layer().weight.detach().double()
        layer.unmerge()
        layer.get_base_layer().weight.data.copy_(merged_copy)
        assert torch.allclose(update.delta, merged - weight, atol=1e-6)


# ---------------------------------------------------------------- the probe set


def test_probe_set_never_overlaps_the_trained_tasks_texts(builtin_data):
    probe = draw_probe_set(resolve_task("banking77"), builtin_data, per_task=400, cache=False)
    trained = [json.loads(line)["text"] for split in ("train", "test")
               for line in (builtin_data / "banking77" / f"{split}.jsonl").read_text()
               .splitlines()]
    known = {hygiene.normalise(t) for t in trained}
    assert not any(hygiene.normalise(t) in known for t in probe.texts)
    # The six shared texts were there to be drawn, and were left out.
    assert len(probe.indices_of("agnews")) == 40
    assert len(probe.indices_of("imdb")) == 60
    assert "banking77" not in probe.tasks
    again = draw_probe_set(resolve_task("banking77"), builtin_data, per_task=400, cache=False)
    assert again.digest == probe.digest


def test_probe_set_is_seeded_and_cached(builtin_data):
    first = draw_probe_set(resolve_task("agnews"), builtin_data, per_task=30)
    cached = draw_probe_set(resolve_task("agnews"), builtin_data, per_task=30)
    other_seed = draw_probe_set(resolve_task("agnews"), builtin_data, per_task=30, seed=1,
                                cache=False)
    assert cached.digest == first.digest and len(first) == 60
    assert other_seed.digest != first.digest
    assert first.describe()["per_task"] == {"banking77": 30, "imdb": 30}


def test_a_missing_source_task_is_named_not_fatal(builtin_data):
    import shutil

    shutil.rmtree(builtin_data / "imdb")
    probe = draw_probe_set(resolve_task("banking77"), builtin_data, cache=False)
    assert set(probe.tasks) == {"agnews"} and "imdb" in probe.unavailable


def test_a_user_task_offline_is_probed_on_pythons_own_prose(synth_task):
    # No data dir and no Hub: none of the built-in tasks can be read. The probe set falls
    # back to the documentation paragraphs that ship with Python, without labels.
    probe = draw_probe_set(resolve_task(str(synth_task)), None, per_task=50, cache=False)
    # As many texts as the three built-in sources would have given.
    assert set(probe.tasks) == {FALLBACK_SOURCE} and len(probe) == 150
    assert set(probe.labels) == {NO_LABEL} and len(set(probe.texts)) == len(probe)
    assert {"agnews", "imdb", "banking77"} <= set(probe.unavailable)
    assert all(len(text.split()) >= 12 for text in probe.texts)
    again = draw_probe_set(resolve_task(str(synth_task)), None, per_task=50, cache=False)
    assert again.digest == probe.digest
    # No labels, no transfer probe: the task it would classify is none.
    from peft_arena.measure.retention import transfer_task
    assert transfer_task("synth", probe) is None


# ---------------------------------------------------------------- in the cell


def _cell_spec(tiny_bert, **settings):
    return tiny_spec(tiny_bert, None, task="agnews", **{"max_train_samples": 64,
                                                        "max_eval_samples": 16, **settings})


@pytest.mark.slow
def test_a_cell_records_retention_and_the_weight_update(tiny_bert_body, builtin_data):
    from peft_arena.cell.entry import run_cell

    record = run_cell(_cell_spec(tiny_bert_body), builtin_data)
    kept = record["retention"]
    assert kept["measured"], kept
    assert 0.0 < kept["cka"] <= 1.0 + 1e-9
    assert kept["transfer"]["task"] == "banking77"
    assert kept["transfer"]["delta"] == pytest.approx(
        kept["transfer"]["tuned_accuracy"] - kept["transfer"]["base_accuracy"])
    assert kept["lm"]["kind"] is None and kept["lm"]["reason"]
    assert kept["pooling"] == "first token"
    # Three of Banking77's 80 test texts are in AG News's test file: never probe texts.
    assert kept["probe_set"]["per_task"] == {"banking77": 77, "imdb": 60}
    update = record["weight_update"]
    assert update["summary"]["modules"] == 4  # LoRA on query and value of 2 layers
    assert all(m["effective_rank"] <= 8 + 1e-9 for m in update["modules"].values())
    phases = record["time"]["phases"]
    assert phases["retention_s"] > 0
    assert sum(phases.values()) == pytest.approx(record["time"]["total_s"], rel=0.05)
    # The base side is cached: a second cell of the model does not recompute it.
    again = run_cell(_cell_spec(tiny_bert_body, seed=1), builtin_data)
    assert again["retention"]["base_cache_hit"]
    assert again["retention"]["transfer"]["base_accuracy"] == kept["transfer"]["base_accuracy"]


def test_measure_retention_false_leaves_the_sections_out_and_keeps_the_id(tiny_bert_body,
                                                                         builtin_data):
    from peft_arena.cell.entry import run_cell

    spec = _cell_spec(tiny_bert_body, measure_retention=False)
    assert spec.cell_id == _cell_spec(tiny_bert_body).cell_id
    record = run_cell(spec, builtin_data)
    assert "retention" not in record and "weight_update" not in record
    assert "retention_s" not in record["time"]["phases"]


def test_committed_records_keep_their_cell_ids():
    from peft_arena.config.spec import CellSpec

    files = sorted(COMMITTED_RECORDS.glob("*.json"))
    assert files, "the committed results folder holds records"
    for file in files:
        record = json.loads(file.read_text())
        assert CellSpec.from_dict(record["spec"]).cell_id == record["cell_id"], file.name


def test_measure_retention_is_a_run_setting_that_keeps_the_cell_id():
    from peft_arena import api

    [on] = api.plan_cells(["agnews"], ["lora"])
    [off] = api.plan_cells(["agnews"], ["lora"], sets=["measure_retention=false"])
    assert on.measure_retention and not off.measure_retention
    assert on.cell_id == off.cell_id
    with pytest.raises(UserError, match="measure_retention"):
        api.plan_cells(["agnews"], ["lora"], sets=["measure_retention=3"])


def test_transfer_task_is_the_documented_pair_else_another_with_texts():
    from peft_arena.data.probe_set import ProbeSet

    both = ProbeSet(["t"] * 20, ["agnews"] * 10 + ["imdb"] * 10, [0] * 20, {})
    only_imdb = ProbeSet(["t"] * 10, ["imdb"] * 10, [0] * 10, {})
    assert retention.transfer_task("banking77", both) == "agnews"
    assert retention.transfer_task("banking77", only_imdb) == "imdb"
    assert retention.transfer_task("imdb", only_imdb) is None  # never the trained task
