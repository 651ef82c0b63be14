"""Prompt formats for instruction tuning: how a record becomes the text a model reads and the text it must write.

- ``alpaca``: the Stanford Alpaca template (Taori et al. 2023, https://github.com/tatsu-lab/stanford_alpaca,
  ``train.py``'s ``PROMPT_DICT``), with a newline after ``### Response:`` as in Raschka's *Build a Large Language
  Model (From Scratch)* ch. 7 and alpaca-lora; records without an input get the no-input variant.
- ``chat``: the tokenizer's own chat template (SmolLM2's ``<|im_start|>user ... <|im_end|>`` turns), the
  instruction and input joined by a blank line as the user turn, the assistant turn opened.

The response is the record's output; the end-of-sequence token is appended as an id by the SFT encoder
(:mod:`shared.tasks.sft`), never as text, so no tokenizer can split it.
"""

from __future__ import annotations

from typing import Any

from shared.config import ConfigError
from shared.data.tokenizer import TokenizerError

TEMPLATES = ("alpaca", "chat")

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
# text that, appearing in a generated answer, means the model is echoing the template instead of answering
ECHO_MARKERS = {"alpaca": ("### Instruction:", "### Input:", "### Response:", "Below is an instruction"),
                "chat": ("<|im_start|>", "<|im_end|>", "\nuser\n", "\nassistant\n")}


def check_template(name: str) -> None:
    """Raises ConfigError naming an unknown template and listing the known ones."""
    if name not in TEMPLATES:
        raise ConfigError(f"unknown prompt template '{name}'. Known templates: {', '.join(TEMPLATES)}")


def user_message(instruction: str, input: str = "") -> str:
    """The chat template's user turn: the instruction, then the input after a blank line when there is one."""
    return instruction.strip() + (f"\n\n{input.strip()}" if input.strip() else "")


def format_prompt(instruction: str, input: str, template: str, tokenizer: Any = None) -> str:
    """The prompt text of one record, ending where the response begins.

    Args:
        instruction, input: the record's fields (``input`` may be empty).
        template: one of :data:`TEMPLATES`.
        tokenizer: for ``chat``, a tokenizer with a chat template (an :class:`shared.data.hf_tokenizer.HFTokenizer`
            or a ``transformers`` tokenizer); unused for ``alpaca``.

    Raises:
        ConfigError: an unknown template.
        TokenizerError: ``chat`` with no tokenizer, or one without a chat template.
    """
    check_template(template)
    if template == "alpaca":
        if input.strip():
            return ALPACA_INPUT.format(instruction=instruction.strip(), input=input.strip())
        return ALPACA_NO_INPUT.format(instruction=instruction.strip())
    hf = getattr(tokenizer, "hf", tokenizer)
    if hf is None or not getattr(hf, "chat_template", None):
        raise TokenizerError("prompt template 'chat' needs a tokenizer with a chat template, and "
                             f"{'none was given' if hf is None else type(hf).__name__ + ' has none'}. Fix: use "
                             "template 'alpaca', or a model whose tokenizer defines a chat template")
    messages = [{"role": "user", "content": user_message(instruction, input)}]
    return hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
