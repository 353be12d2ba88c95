"""A tiny GGUF file written from a tiny random Llama (tiny_decoders.py), as llama.cpp's
converter lays one out: `blk.N.*` tensor names, query and key rows permuted for its rotary
layout (transformers undoes that on load), a byte-level BPE tokenizer in the metadata, and the
MLP's down projection quantized to Q8_0 (so the file's type is Q8_0 and loading dequantizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

QUANTIZED = "ffn_down"


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    rows, cols = weight.shape
    return (weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2)
            .reshape(rows, cols))


def write_tiny_gguf(path: Path, llama_folder: Path) -> Path:
    import gguf

    model = LlamaForCausalLM.from_pretrained(llama_folder, dtype=torch.float32)
    config = model.config
    tokenizer = json.loads((llama_folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([gguf.TokenType.CONTROL if t in ("<s>", "</s>")
                            else gguf.TokenType.NORMAL for t in tokens])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_add_bos_token(True)

    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for layer in range(config.num_hidden_layers):
        for ours, theirs in names.items():
            weight = state[f"model.layers.{layer}.{ours}.weight"]
            if theirs == "attn_q":
                weight = _permute(weight, config.num_attention_heads)
            elif theirs == "attn_k":
                weight = _permute(weight, config.num_key_value_heads)
            name = f"blk.{layer}.{theirs}.weight"
            if theirs == QUANTIZED:
                kind = gguf.GGMLQuantizationType.Q8_0
                writer.add_tensor(name, gguf.quants.quantize(weight, kind), raw_dtype=kind)
            else:
                writer.add_tensor(name, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
