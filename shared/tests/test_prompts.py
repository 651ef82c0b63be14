"""Prompt formats on fixed examples (golden strings): Alpaca with and without an input, the chat template; and the
errors for an unknown template or a tokenizer without a chat template."""

import pytest

from shared.config import ConfigError
from shared.data.prompts import ALPACA_NO_INPUT, format_prompt
from shared.data.tokenizer import TokenizerError
from shared.models.tiny import tiny_tokenizer

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n### Instruction:\nTranslate to French.\n\n### Input:\n"
    "Good morning\n\n### Response:\n")
ALPACA_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName a primary colour.\n\n### Response:\n")
CHAT = "<|im_start|>user\nTranslate to French.\n\nGood morning<|im_end|>\n<|im_start|>assistant\n"


def test_alpaca_with_and_without_input_golden():
    assert format_prompt(" Translate to French. ", "Good morning\n", "alpaca") == ALPACA_WITH_INPUT
    assert format_prompt("Name a primary colour.", "", "alpaca") == ALPACA_WITHOUT_INPUT
    assert format_prompt("Name a primary colour.", "   ", "alpaca") == ALPACA_NO_INPUT.format(
        instruction="Name a primary colour.")


def test_chat_uses_the_tokenizers_template_golden():
    tok = tiny_tokenizer(["hello world"] * 3, 300)
    assert format_prompt("Translate to French.", "Good morning", "chat", tok) == CHAT


def test_unknown_template_and_missing_chat_template_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown prompt template 'vicuna'.*alpaca, chat"):
        format_prompt("x", "", "vicuna")
    tok = tiny_tokenizer(["hello world"] * 3, 300)
    tok.chat_template = None
    with pytest.raises(TokenizerError, match="needs a tokenizer with a chat template.*has none"):
        format_prompt("x", "", "chat", tok)
    with pytest.raises(TokenizerError, match="none was given"):
        format_prompt("x", "", "chat")
