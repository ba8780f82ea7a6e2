"""The tiny randomly initialised BERT that stands in for MiniLM in unit tests (fast, meaningless F1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_bert_config(vocab_size: int) -> Any:
    """2 layers, 32 wide, 2 heads: the real tokenizer's vocabulary, a fraction of MiniLM's cost."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT encoder with the real MiniLM tokenizer (a stand-in for MiniLM), saved in ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from feedback.rephrase.model import base_model_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    BertModel(tiny_bert_config(tokenizer.vocab_size)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
