"""A Hugging Face tokenizer behind the project's :class:`shared.data.tokenizer.Tokenizer` interface.

``transformers`` is imported when a tokenizer is loaded, never at import time (week 1 does not pay for it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.data.tokenizer import TokenizerError


class HFTokenizer:
    """Wraps a ``transformers`` tokenizer (``PreTrainedTokenizerBase``); ``.hf`` is the wrapped object.

    ``encode`` adds no special tokens (as the other tokenizers of the project), ``decode`` drops them, and
    ``sha256`` hashes the serialised tokenizer (``tokenizer.json``) and its chat template.
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        content = backend.to_str() if backend is not None else repr(sorted(hf_tokenizer.get_vocab().items()))
        template = getattr(hf_tokenizer, "chat_template", None) or ""
        self._sha256 = hashlib.sha256((content + "\0" + str(template)).encode()).hexdigest()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> HFTokenizer:
        """Load from a local folder (offline: nothing is downloaded).

        Raises:
            TokenizerError: the folder holds no loadable tokenizer.
        """
        from transformers import AutoTokenizer

        try:
            return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"no Hugging Face tokenizer could be loaded from {path}: {e}") from e

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @property
    def eos_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int | None:
        return self.hf.pad_token_id

    @property
    def sha256(self) -> str:
        return self._sha256

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's own chat template (e.g. SmolLM2's ``<|im_start|>`` turns) as text.

        Raises:
            TokenizerError: the tokenizer has no chat template.
        """
        if not getattr(self.hf, "chat_template", None):
            raise TokenizerError("this Hugging Face tokenizer has no chat template; format the prompt yourself")
        return self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    def save(self, path: str | Path) -> Path:
        """``save_pretrained`` into the folder ``path``."""
        self.hf.save_pretrained(str(path))
        return Path(path)
