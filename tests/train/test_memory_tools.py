"""Sizing big models without their weights (counts and the memory estimate on a config-only
Llama-3.2-1B), what QLoRA keeps out of 4-bit, and the batch-size fallback's arithmetic."""

from __future__ import annotations

import json

import pytest
import torch

from peft_arena.config.spec import CellSpec
from peft_arena.matrix.budget import count_cell_parameters
from peft_arena.model.adapters import default_target_modules
from peft_arena.model.loading import load_model
from peft_arena.strategies import load_strategies
from peft_arena.train.memory_estimate import estimate_cell_memory, nf4_bytes_per_value
from peft_arena.train.memory_tools import BatchPlan, FallbackLog, run_with_batch_fallback
from tests.support.paths import COMMITTED_RECORDS
from tests.support.synthetic import KEYWORDS

# Llama-3.2-1B's shape (its config.json without the weights).
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, VOCAB = 2048, 16, 32, 8, 8192, 128256
HEAD_DIM = HIDDEN // HEADS  # 64
KV = KV_HEADS * HEAD_DIM  # 512: k_proj and v_proj map 2048 -> 512
LABELS = 4


@pytest.fixture(scope="module")
def llama_1b_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-3.2-1b-config")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "intermediate_size": INTERMEDIATE,
        "vocab_size": VOCAB, "head_dim": HEAD_DIM, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001}))
    return folder


# The base model, by hand: embeddings; per layer q (2048x2048), k and v (2048x512 each),
# o (2048x2048), gate, up and down (2048x8192 each) and two RMSNorm weights; the final norm.
EMBEDDINGS = VOCAB * HIDDEN  # 262,668,288
PER_LAYER = (2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN)
BASE = EMBEDDINGS + LAYERS * PER_LAYER + HIDDEN  # 1,235,814,400: Llama-3.2-1B's published size
SCORE = HIDDEN * LABELS  # the new head: 8,192, no bias


def test_the_hand_arithmetic_matches_the_published_size():
    assert BASE == 1_235_814_400


def test_lora_r8_counts_on_a_config_only_llama_1b(llama_1b_config):
    spec = CellSpec(model=str(llama_1b_config), task="t", strategy="lora", peft={"r": 8})
    count = count_cell_parameters(spec, LABELS)
    # PEFT's defaults for Llama: q_proj (A 8x2048, B 2048x8) and v_proj (A 8x2048, B 512x8).
    lora = LAYERS * ((8 * HIDDEN + HIDDEN * 8) + (8 * HIDDEN + KV * 8))  # 851,968
    assert count.trainable == lora + SCORE == 860_160
    # The frozen head stays beside its trainable copy (PEFT's modules_to_save).
    assert count.total == BASE + 2 * SCORE + lora


def test_ia3_counts_on_a_config_only_llama_1b(llama_1b_config):
    spec = CellSpec(model=str(llama_1b_config), task="t", strategy="ia3")
    count = count_cell_parameters(spec, LABELS)
    # PEFT's defaults for Llama: k_proj and v_proj scale their 512 outputs; down_proj, a
    # feed-forward module, scales its 8,192 inputs.
    ia3 = LAYERS * (KV + KV + INTERMEDIATE)  # 147,456
    assert count.trainable == ia3 + SCORE == 155_648
    assert count.total == BASE + 2 * SCORE + ia3


def test_memory_estimate_of_a_config_only_llama_1b(llama_1b_config):
    def estimate(strategy, **settings):
        spec = CellSpec(model=str(llama_1b_config), task="t", strategy=strategy,
                        batch_size=8, max_length=128, **settings)
        return estimate_cell_memory(spec, LABELS, on_gpu=True)

    lora, lora_bf16 = estimate("lora", precision="fp32"), estimate("lora", precision="bf16")
    lora_params = 851_968
    trainable = lora_params + SCORE
    rotary = HEAD_DIM // 2 * 4 * 2  # inv_freq and original_inv_freq buffers, fp32
    assert lora.weights_bytes == 4 * (BASE + 2 * SCORE + lora_params) + rotary
    # bf16: the frozen base (and the frozen copy of the head) in 2 bytes, trainables in 4.
    assert lora_bf16.weights_bytes == 2 * (BASE + SCORE) + 4 * trainable + rotary
    assert lora.gradients_bytes == 4 * trainable and lora.optimizer_bytes == 8 * trainable
    # QLoRA: every linear layer of the base in NF4; embeddings and norms in bf16.
    qlora = estimate("qlora", precision="bf16")
    linear = LAYERS * (PER_LAYER - 2 * HIDDEN)
    assert qlora.weights_bytes == pytest.approx(
        linear * nf4_bytes_per_value(True) + 2 * (BASE - linear + SCORE) + 4 * trainable
        + rotary, abs=1)
    # Activations, by hand, for 8 x 128 tokens in bf16 with SDPA (no attention matrix kept).
    # A frozen layer keeps its norms' inputs (2h), the gated MLP's gate, up and activation
    # (3i), queries, keys and values as the model has them and SDPA's output (2h + 2kv);
    # LoRA on q and v with dropout adds each one's dropped copy (h), its rank-8 product and
    # its mask (a byte an element). The classifier's last layer runs for the last token
    # only (h + 2h); outside the layers the final norm's input and the head's 8 read rows.
    tokens = 8 * 128
    per_layer = tokens * (2 * (2 * HIDDEN + 3 * INTERMEDIATE + 2 * HIDDEN + 2 * KV
                               + 2 * HIDDEN + 2 * 8) + 2 * HIDDEN)
    last = tokens * 2 * 3 * HIDDEN
    outside = 2 * (tokens * HIDDEN + 8 * HIDDEN)
    assert lora_bf16.activations_bytes == (LAYERS - 1) * per_layer + last + per_layer + outside
    assert lora_bf16.activations_checkpointed_bytes == (
        2 * LAYERS * tokens * HIDDEN + 2 * per_layer + outside)
    assert lora_bf16.logits_bytes == 3 * 8 * LABELS * 4 and lora_bf16.loading_bytes == 0
    full = estimate("full", precision="bf16", gradient_checkpointing=True)
    assert full.weights_bytes == 4 * (BASE + SCORE) + rotary  # fp32: it all trains
    assert full.total_bytes == (full.weights_bytes + 14 * (BASE + SCORE)
                                + full.activations_checkpointed_bytes + full.logits_bytes)


def test_dry_run_prints_counts_and_the_memory_estimate(llama_1b_config):
    from click.testing import CliRunner

    from peft_arena.cli import cli

    done = CliRunner().invoke(cli, ["run", "--model", str(llama_1b_config), "--matrix",
                                    "banking77", "--strategies", "lora,qlora", "--dry-run",
                                    "--set", "lora.target_modules=all-linear"])
    assert done.exit_code == 0, done.output
    assert "Estimated training memory" in done.output
    # all-linear on 77 labels: r=8 on q, k, v, o, gate, up, down of 16 layers, plus the head.
    all_linear = LAYERS * 8 * ((HIDDEN + HIDDEN) * 2 + (HIDDEN + KV) * 2
                               + (HIDDEN + INTERMEDIATE) * 3)
    assert f"{all_linear + HIDDEN * 77:,}" in done.output


def test_qlora_keeps_no_4bit_weight_under_the_head_or_the_pooler(tiny_bert, tiny_llama):
    for folder, kept in ((tiny_bert, ("classifier", "bert.pooler")), (tiny_llama, ("score",))):
        spec = CellSpec(model=str(folder), task="synth", strategy="qlora")
        model = load_model(str(folder), KEYWORDS, on_gpu=False, **load_strategies().get(
            "qlora")(spec).load_kwargs(torch.float32))
        four_bit = {name for name, p in model.named_parameters()
                    if p.__class__.__name__ == "Params4bit"}
        assert four_bit, "nothing was quantized"
        assert not [n for n in four_bit if n.startswith(kept)], four_bit


def test_pefts_defaults_per_architecture():
    assert default_target_modules("LORA", "bert") == ["query", "value"]  # as before
    assert default_target_modules("LORA", "llama") == ["q_proj", "v_proj"]
    assert default_target_modules("IA3", "llama") == ["k_proj", "v_proj", "down_proj"]
    # PEFT keeps no AdaLoRA table for Mistral: LoRA's targets serve.
    assert default_target_modules("ADALORA", "mistral") == ["q_proj", "v_proj"]
    assert default_target_modules("IA3", "ctrl") is None


# ------------------------------------------------------------------ batch-size fallback


def _fake_oom_training(largest_that_fits: int):
    tried = []

    def train(plan: BatchPlan) -> BatchPlan:
        tried.append(plan)
        if plan.batch_size > largest_that_fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return plan

    return train, tried


def test_the_fallback_halves_the_batch_and_keeps_the_effective_batch():
    train, tried = _fake_oom_training(largest_that_fits=8)
    log = FallbackLog()
    used = run_with_batch_fallback(train, BatchPlan(32, 1), enabled=True, log=log)
    assert used == BatchPlan(8, 4) and used.effective == 32
    assert tried == [BatchPlan(32, 1), BatchPlan(16, 2), BatchPlan(8, 4)]
    assert log.used == used
    assert log.to_dict() == {"fallback_used": True, "out_of_memory_batch_sizes": [32, 16]}


def test_the_fallback_steps_through_divisors_of_the_effective_batch():
    assert BatchPlan(12, 2).smaller() == BatchPlan(8, 3)
    assert BatchPlan(5, 1).smaller() == BatchPlan(1, 5)
    assert BatchPlan(1, 7).smaller() is None


def test_without_the_fallback_out_of_memory_propagates():
    train, tried = _fake_oom_training(largest_that_fits=8)
    with pytest.raises(torch.OutOfMemoryError):
        run_with_batch_fallback(train, BatchPlan(32, 1), enabled=False)
    assert tried == [BatchPlan(32, 1)]


def test_other_errors_are_not_retried():
    def train(plan: BatchPlan) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        run_with_batch_fallback(train, BatchPlan(32, 1), enabled=True)


def test_the_quick_presets_minilm_cells_keep_their_identity():
    """New settings at their defaults leave the config hash alone: every cell of the quick
    preset still matches its committed record, so nothing recorded is run again."""

    from peft_arena import api

    records = COMMITTED_RECORDS
    if not records.is_dir():
        pytest.skip("no committed results/records in this checkout")
    recorded = {path.stem for path in records.glob("*.json")}
    cells = api.plan_cells(tasks=["imdb", "agnews", "banking77"])
    assert [c.cell_id for c in cells if c.cell_id not in recorded] == []


def test_the_report_shows_the_estimates_error_against_torchs_gpu_peak():
    from peft_arena.report.results import _estimate_columns

    gpu = {"memory_tools": {"estimate": {"total_bytes": 3 * 2**30}},
           "memory": {"torch_peak_allocated_bytes": 4 * 2**30, "source": "nvml"}}
    gpu_columns = _estimate_columns(gpu)
    assert (gpu_columns["estimate_mb"], gpu_columns["estimate_error"]) == (3 * 1024, -0.25)
    # A GPU record has no CPU check: its error against resident memory stays unknown.
    assert gpu_columns["estimate_error_cpu"] != gpu_columns["estimate_error_cpu"]
    cpu = {"memory_tools": {"estimate": {"total_bytes": 2**20}},
           "memory": {"peak_bytes": 700 * 2**20, "source": "cpu_rss"}}
    columns = _estimate_columns(cpu)
    assert columns["estimate_mb"] == 1 and columns["estimate_error"] != columns["estimate_error"]


def test_the_report_shows_the_estimates_error_against_the_memory_in_use():
    from peft_arena.report.results import _estimate_columns

    check = {"error": -0.4, "measured_bytes": 500 * 2**20, "in_use_error": -0.05}
    record = {"memory_tools": {"estimate": {"total_bytes": 300 * 2**20}, "estimate_check": check},
              "memory": {"peak_bytes": 900 * 2**20, "source": "cpu_rss"}}
    columns = _estimate_columns(record)
    assert (columns["estimate_error_cpu"], columns["estimate_error_in_use"]) == (-0.4, -0.05)
    # A record from before the in-use sample: the column is unknown, not zero.
    del check["in_use_error"]
    missing = _estimate_columns(record)["estimate_error_in_use"]
    assert missing != missing
