"""A tiny random Llama and a byte-level BPE trained in a second: the debug model of the Hugging Face-side weeks.

CI and the tests of weeks 7-11 need a model with the real interfaces (``transformers``' ``LlamaForCausalLM``, a
fast tokenizer with EOS, padding and a ChatML chat template like SmolLM2's) but no download: :func:`write_tiny_llama`
builds one from a seed and a few texts, so every stage runs in seconds on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from shared.models.hf import write_folder_atomic

# ChatML, the turn format of SmolLM2's template (without its default system message)
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE (Hugging Face ``tokenizers``) trained on ``texts``, with ``<|pad|>`` (padding),
    ``<|im_start|>`` (BOS) and ``<|im_end|>`` (EOS) and the ChatML chat template, as a ``PreTrainedTokenizerFast``.
    Deterministic: the same texts give the same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


def tiny_llama(vocab_size: int, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0,
               tokenizer: Any = None) -> Any:
    """A random ``LlamaForCausalLM`` (tied embeddings, MLP 4x wide), seeded; special ids from ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    ids = {} if tokenizer is None else {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                                        "bos_token_id": tokenizer.bos_token_id}
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, **ids))


def write_tiny_llama(folder: str | Path, texts: Sequence[str], vocab_size: int = 512, hidden_size: int = 32,
                     num_layers: int = 2, num_heads: int = 2, seed: int = 0) -> Path:
    """Write a tiny Llama and its tokenizer (trained on ``texts``) as a ``save_pretrained`` folder, atomically;
    ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(folder)`` load it."""
    tok = tiny_tokenizer(texts, vocab_size)
    model = tiny_llama(len(tok), hidden_size, num_layers, num_heads, seed, tok)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(str(tmp))

    return write_folder_atomic(folder, write)
