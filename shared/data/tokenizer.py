"""The tokenizer interface every model-facing piece uses: encode/decode, special ids, a content hash, chat prompts.

Four implementations satisfy it: :class:`shared.data.text.CharTokenizer` (week 4), the byte-level BPE written by
hand and trained on the corpus (:class:`shared.data.bpe.BPETokenizer`, week 5), its library reference, sentencepiece
(:class:`shared.data.spm_tokenizer.SentencePieceTokenizer`), and any Hugging Face tokenizer
(:class:`shared.data.hf_tokenizer.HFTokenizer`, e.g. SmolLM2's). The ``sha256`` identifies the tokenizer's content:
a checkpoint records it and a model is never evaluated or resumed with another one (``shared.checkpoint``,
``shared.models.loading``), nor trained on a stream packed by another one (``shared.data.pack``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable


class TokenizerError(ValueError):
    """A tokenizer file is missing or unreadable, or does not match what it is used with."""


@runtime_checkable
class Tokenizer(Protocol):
    """What a tokenizer offers. Special ids are None where the tokenizer has no such token."""

    @property
    def vocab_size(self) -> int: ...  # number of ids, specials included

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int | None: ...

    @property
    def pad_id(self) -> int | None: ...

    @property
    def sha256(self) -> str: ...  # hex digest of the tokenizer's content (its model file or vocabulary)

    def encode(self, text: str) -> list[int]: ...  # ids of ``text``, no BOS/EOS added

    # text of ``ids``; special tokens decode to nothing, except in the byte-level BPE, where they decode to their
    # strings (its encode maps those strings to them, so that decode(encode(x)) == x for every x)
    def decode(self, ids: Iterable[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str: ...


def plain_chat_template(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The chat prompt of a tokenizer without chat tokens: one ``Role: content`` paragraph per message, then
    ``Assistant:`` when a reply is wanted. ``[{"role": "user", "content": "Hi"}]`` -> ``"User: Hi\\n\\nAssistant:"``.

    Raises:
        TokenizerError: a message without a ``role`` or ``content``.
    """
    parts = []
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise TokenizerError(f"chat message {i} needs a 'role' and a 'content', got keys {sorted(m)}")
        parts.append(f"{m['role'].capitalize()}: {m['content']}")
    if add_generation_prompt:
        parts.append("Assistant:")
    return "\n\n".join(parts)


BPE_SUFFIX = ".bpe.json"  # a byte-level BPE file (shared.data.bpe); any other .json is a char tokenizer's


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from disk by its form: a byte-level BPE ``.bpe.json``, a sentencepiece ``.model`` file, a
    char tokenizer ``.json``, or a folder holding a Hugging Face ``tokenizer.json`` (an HF model export or
    download), a ``tokenizer.bpe.json``, a ``tokenizer.model`` or a ``char_tokenizer.json`` (a
    :func:`shared.models.hf.save_hf` export).

    Raises:
        TokenizerError: the path is missing or of none of these forms.
    """
    path = Path(path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        from shared.data.hf_tokenizer import HFTokenizer

        return HFTokenizer.from_pretrained(path)
    for name in (f"tokenizer{BPE_SUFFIX}", "tokenizer.model", "char_tokenizer.json"):
        if path.is_dir() and (path / name).is_file():
            path = path / name
            break
    if path.name.endswith(BPE_SUFFIX):
        from shared.data.bpe import BPETokenizer

        return BPETokenizer.load(path)
    if path.suffix == ".model":
        from shared.data.spm_tokenizer import SentencePieceTokenizer

        return SentencePieceTokenizer.load(path)
    if path.suffix == ".json" and path.is_file():
        from shared.data.text import CharTokenizer

        return CharTokenizer.load(path)
    raise TokenizerError(f"{path} is not a tokenizer: expected a byte-level BPE {BPE_SUFFIX}, a sentencepiece .model, "
                         "a char tokenizer .json, or a folder with a Hugging Face tokenizer.json")
