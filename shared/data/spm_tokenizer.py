"""The library reference BPE: sentencepiece, trained on the corpus, lossless, with BOS/EOS/PAD ids.

BPE (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909) starts from characters and repeatedly merges
the most frequent adjacent pair into a new token until the vocabulary is full; frequent words become one
token, rare ones stay split. sentencepiece (Kudo & Richardson 2018, https://github.com/google/sentencepiece)
does the training and encoding. Its defaults are lossy (NFKC normalisation, squeezed whitespace, one
``<unk>`` for unseen characters), so :func:`train_sentencepiece` switches all of that off and turns on byte
fallback: any character outside the vocabulary becomes its UTF-8 bytes, and ``decode(encode(x)) == x`` for every x.
The hand-written byte-level BPE the curriculum builds is :mod:`shared.data.bpe` (``data.tokenizer=bpe``); this
one is ``data.tokenizer=sentencepiece``.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from collections.abc import Iterable
from pathlib import Path

from shared.atomic import atomic_path
from shared.data.tokenizer import TokenizerError, plain_chat_template

SPECIALS = {"unk": 0, "bos": 1, "eos": 2, "pad": 3}  # fixed ids, recorded with every packed file


class SentencePieceTokenizer:
    """A trained sentencepiece model: encode/decode, special-token ids, and a content hash (the sha256 of the
    model file). Satisfies :class:`shared.data.tokenizer.Tokenizer`.

    Load one with :meth:`load` or train one with :func:`train_sentencepiece`.
    """

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.sha256 = hashlib.sha256(model_proto).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> SentencePieceTokenizer:
        """Raises TokenizerError: the file is missing or not a sentencepiece model."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} not found: run the tokenizer stage first")
        try:
            return cls(path.read_bytes())
        except RuntimeError as e:
            raise TokenizerError(f"{path} is not a sentencepiece model ({e}); delete it and train it again") from e

    def save(self, path: str | Path) -> Path:
        """Atomically write the model file."""
        with atomic_path(Path(path)) as tmp:
            Path(tmp).write_bytes(self.proto)
        return Path(path)

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added)."""
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens decode to nothing."""
        return self.sp.decode([int(i) for i in ids])

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """A trained BPE has no chat tokens: the plain-text template of :func:`shared.data.tokenizer.plain_chat_template`."""
        return plain_chat_template(messages, add_generation_prompt)

    def chars_per_token(self, texts: list[str]) -> float:
        """Characters per token over ``texts``: the compression the vocabulary buys (a char model has 1.0)."""
        return sum(len(t) for t in texts) / max(1, sum(len(ids) for ids in self.encode_batch(texts)))


def train_sentencepiece(documents: Iterable[str], vocab_size: int, max_sentences: int = 2_000_000,
                        seed: int = 0) -> SentencePieceTokenizer:
    """Train a lossless byte-fallback BPE on the lines of ``documents``.

    Args:
        vocab_size: total ids, including the 4 specials and the 256 byte-fallback pieces.
        max_sentences: at most this many lines train it, sampled with ``seed`` (the result is deterministic).

    Raises:
        TokenizerError: the vocabulary cannot hold the byte pieces, or the text is too small for it (both
            name ``data.vocab_size``; sentencepiece's own message is kept, with the largest size it accepts).
    """
    import sentencepiece as spm

    if vocab_size < 256 + len(SPECIALS) + 1:
        raise TokenizerError(f"data.vocab_size={vocab_size} is too small: byte fallback alone needs 256 + 4 ids; "
                             f"set data.vocab_size to {256 + len(SPECIALS) + 1} or more")
    lines = [line for doc in documents for line in doc.split("\n") if line]  # "\n" is its own piece (below)
    if len(lines) > max_sentences:  # sample here, with our seed: sentencepiece's own sampling is not seedable
        lines = random.Random(seed).sample(lines, max_sentences)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, split_digits=True, character_coverage=1.0,
            user_defined_symbols=["\n"], unk_id=SPECIALS["unk"], bos_id=SPECIALS["bos"], eos_id=SPECIALS["eos"],
            pad_id=SPECIALS["pad"], shuffle_input_sentence=False, num_threads=2, minloglevel=2,
        )
    except RuntimeError as e:
        high = re.search(r"<= (\d+)", str(e))  # "Vocabulary size too high (N). Please set it to a value <= M."
        low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))  # the text's characters + bytes
        if low:
            raise TokenizerError(f"data.vocab_size={vocab_size} is too small for this text: its characters, the 256 "
                                 f"byte-fallback pieces and the specials need {low.group(1)} ids; set "
                                 f"data.vocab_size to {low.group(1)} or more") from e
        fix = f"set data.vocab_size to {high.group(1)} or less" if high else "set a smaller data.vocab_size"
        raise TokenizerError(f"sentencepiece could not train a BPE with data.vocab_size={vocab_size} ({e}): the "
                             f"training text is too small for it; {fix}, or train on more text") from e
    return SentencePieceTokenizer(model.getvalue())
