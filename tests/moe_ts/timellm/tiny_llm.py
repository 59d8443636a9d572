"""A tiny randomly initialised Qwen2 (or GPT-2) decoder and a byte-level BPE tokenizer trained on a few sentences, saved as a
transformers folder (no download): the frozen LLM of the Time-LLM tests. Loaded by path from the tests' conftests."""
from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "Dataset description: a univariate time series observed at regular intervals. Task description: forecast the "
    "next 96 steps given the previous 512 steps information; Input statistics: min value -1.2345, max value 2.5, "
    "median value 0.0123, the trend of input is upward, top 5 lags are : [0, 24, 168, 12, 7]",
    "<|start_prompt|> the trend of input is downward <|end_prompt|> The Electricity Transformer Temperature (ETT) "
    "is a crucial indicator in the electric power long-term deployment. 0123456789.-,;:[]",
]
TINY_QWEN2 = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024)
TINY_GPT2 = dict(n_embd=32, n_layer=3, n_head=4, n_positions=1024)


def build_tiny_llm(folder: Path, seed: int = 0, arch: str = "qwen2", **overrides) -> Path:
    """Write a random tiny Qwen2 (RoPE) or GPT-2 (learnt absolute positions) base model and its tokenizer into
    `folder`; returns it."""
    import torch
    from tokenizers import ByteLevelBPETokenizer

    from moe_ts.timellm.llm import import_transformers

    transformers = import_transformers()  # before any model class: the project's `kernels` shadows the hub's
    PreTrainedTokenizerFast = transformers.PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES, vocab_size=320, min_frequency=1, special_tokens=["<pad>", "<eos>"],
                            show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(seed)
    if arch == "gpt2":
        model = transformers.GPT2Model(transformers.GPT2Config(vocab_size=len(tokenizer), **{**TINY_GPT2, **overrides}))
    else:
        model = transformers.Qwen2Model(transformers.Qwen2Config(vocab_size=len(tokenizer), **{**TINY_QWEN2, **overrides}))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
