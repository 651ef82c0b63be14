"""A byte-level BPE tokenizer written by hand, GPT-2's: a regex cuts text into pre-tokens, learned merges join bytes.

BPE (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909) starts from single symbols and repeatedly merges the
most frequent adjacent pair into a new token until the vocabulary is full. GPT-2 (Radford et al. 2019,
https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf) runs it on
UTF-8 *bytes*: the 256 byte values are the base vocabulary, so no text is ever unknown and ``decode(encode(x)) == x``
for every string. First the regex :data:`GPT2_PATTERN` cuts the text into pre-tokens (a word with its leading
space, a number, a run of punctuation, of whitespace); merges never cross a pre-token, and training counts each
distinct pre-token once, with its frequency.

Ids (``vocab_size`` counts all three groups):

- ``0..255``: the bytes, id == byte value;
- ``256..``: the merged tokens, in the order they were learned (a merge that rebuilds the bytes of a token made
  earlier by another pair reuses that token's id, so every id has distinct bytes);
- the last ``len(special_tokens)`` ids: the special tokens, in order; by default ``<|endoftext|>`` (EOS),
  ``<|bos|>`` (BOS), ``<|pad|>`` (PAD). A special token's string in the text always encodes to its id (the text
  is split on them before pre-tokenisation) and decodes back to the string.

Tie-break: of the pairs with the highest count, the merge is the lexicographically greatest pair of byte strings
``(bytes(a), bytes(b))``, as in Stanford CS336's assignment 1; training is deterministic.

The library references: :mod:`shared.data.spm_tokenizer` (sentencepiece), and Hugging Face ``tokenizers``, whose
byte-level BPE gives the same ids from the same merges (``shared/tests/test_bpe.py``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import regex

from shared.atomic import atomic_write_text
from shared.data.tokenizer import TokenizerError, plain_chat_template

# GPT-2's pre-tokeniser (openai/gpt-2 src/encoder.py); Hugging Face's ByteLevel(use_regex=True) uses the same.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LOOKAHEAD = 3  # chars past a match start the pattern may read ('ll, 're, 've): the streaming encoder's margin
DEFAULT_SPECIALS = ("<|endoftext|>", "<|bos|>", "<|pad|>")
DEFAULT_ROLES = {"eos": "<|endoftext|>", "bos": "<|bos|>", "pad": "<|pad|>"}
FORMAT = "aifs-byte-bpe"
CACHE_LIMIT = 1_000_000  # cached pre-tokens; the cache is emptied when it is full (a long tail of rare words)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (``" "`` -> ``"Ġ"``), used in the saved vocabulary and merges so
    the file is readable text and matches GPT-2's ``vocab.json`` / ``merges.txt`` (openai/gpt-2 src/encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return dict(sorted(out.items()))


def _to_text(b: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[x] for x in b)


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _from_text(s: str) -> bytes:
    inverse = _unicode_to_bytes()
    return bytes(inverse[c] for c in s)


def _utf8(piece: str) -> bytes:
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"the text holds {piece[e.start:e.end]!r}, a lone UTF-16 surrogate, which is not valid "
                             "Unicode: read the file with errors='replace' (or fix its encoding) first") from None


def _merge(word: list[int], a: int, b: int, new: int) -> list[int]:
    """``word`` with every (a, b), left to right and non-overlapping, replaced by ``new``."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class BPETokenizer:
    """A trained byte-level BPE: merges in rank order plus special tokens. Satisfies
    :class:`shared.data.tokenizer.Tokenizer`. Train one with :func:`train_bpe` or read one with :meth:`load`.

    Args:
        merges: ``(left bytes, right bytes)`` pairs in the order they were learned (rank 0 first).
        special_tokens: strings that are never split, given the last ids in this order.
        roles: which special token is ``"bos"``, ``"eos"``, ``"pad"`` (a missing role's id is None).

    Raises:
        TokenizerError: a merge uses a token no earlier merge made, a duplicate or empty special token, or a role
            naming a string that is not a special token.
    """

    def __init__(self, merges: Sequence[tuple[bytes, bytes]], special_tokens: Sequence[str] = DEFAULT_SPECIALS,
                 roles: dict[str, str] | None = None, pattern: str = GPT2_PATTERN) -> None:
        self.vocab = [bytes([i]) for i in range(256)]  # id -> bytes, specials excluded
        index = {b: i for i, b in enumerate(self.vocab)}
        self.merges: list[tuple[bytes, bytes]] = []
        self._ranks: dict[tuple[int, int], int] = {}  # (a, b) -> 1 + its rank: lower merges first
        self._by_rank: list[tuple[int, int, int]] = [(-1, -1, -1)]  # 1 + rank -> (a, b, the id of their merge)
        for rank, (x, y) in enumerate(merges):
            if x not in index or y not in index:
                raise TokenizerError(f"merge {rank} ({x!r}, {y!r}) joins a token that no earlier merge made: the "
                                     "tokenizer file is corrupt; delete it and train it again")
            if (x + y) not in index:
                index[x + y] = len(self.vocab)
                self.vocab.append(x + y)
            pair = (index[x], index[y])
            if pair in self._ranks:
                raise TokenizerError(f"merge {rank} ({x!r}, {y!r}) is listed twice: the tokenizer file is corrupt; "
                                     "delete it and train it again")
            self._ranks[pair] = len(self._by_rank)
            self._by_rank.append((*pair, index[x + y]))
            self.merges.append((x, y))
        self.special_tokens = list(special_tokens)
        if len(set(self.special_tokens)) != len(self.special_tokens) or "" in self.special_tokens:
            raise TokenizerError(f"special tokens must be distinct non-empty strings, got {self.special_tokens}")
        self.special_ids = {s: len(self.vocab) + i for i, s in enumerate(self.special_tokens)}
        # the default roles apply to the default specials a caller kept; roles given explicitly must all exist
        self.roles = {k: v for k, v in DEFAULT_ROLES.items() if v in self.special_ids} if roles is None else dict(roles)
        for role, s in self.roles.items():
            if s not in self.special_ids:
                raise TokenizerError(f"role {role!r} names {s!r}, which is not one of the special tokens "
                                     f"{self.special_tokens}: add it to special_tokens")
        self.pattern = pattern
        self._pat = regex.compile(pattern)
        by_length = sorted(self.special_tokens, key=len, reverse=True)  # the longest special wins at a position
        self._special_re = regex.compile("|".join(regex.escape(s) for s in by_length)) if by_length else None
        self._max_special = max(map(len, by_length), default=0)
        self._table = self.vocab + [s.encode() for s in self.special_tokens]  # id -> bytes, for decode
        self._table_no_specials = self.vocab + [b""] * len(self.special_tokens)
        self._cache: dict[str, list[int]] = {}
        self.sha256 = hashlib.sha256(self._payload().encode()).hexdigest()

    # ---- the Tokenizer interface ----

    @property
    def vocab_size(self) -> int:
        return len(self._table)

    @property
    def bos_id(self) -> int | None:
        return self.special_ids.get(self.roles.get("bos", ""))

    @property
    def eos_id(self) -> int | None:
        return self.special_ids.get(self.roles.get("eos", ""))

    @property
    def pad_id(self) -> int | None:
        return self.special_ids.get(self.roles.get("pad", ""))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added; a special token's string becomes its id).

        Raises:
            TokenizerError: the text holds a lone surrogate (not valid Unicode).
        """
        out: list[int] = []
        if self._special_re is None:
            self._encode_ordinary(text, out)
            return out
        start = 0
        for m in self._special_re.finditer(text):
            self._encode_ordinary(text[start:m.start()], out)
            out.append(self.special_ids[m.group()])
            start = m.end()
        self._encode_ordinary(text[start:], out)
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """The ids of ``"".join(chunks)``, streamed: an open text file (read line by line) or any pieces, however
        cut. Only the text that more input could still change is held back: the pre-tokens starting in the last
        :data:`LOOKAHEAD` characters of what has arrived, and what could be the start of a special token."""
        buf = ""
        for chunk in chunks:
            buf += chunk
            out: list[int] = []
            cut = 0
            if self._special_re is not None:
                for m in self._special_re.finditer(buf):
                    if m.start() + self._max_special > len(buf):  # a longer special could still start here
                        break
                    self._encode_ordinary(buf[cut:m.start()], out)  # text before a special is complete
                    out.append(self.special_ids[m.group()])
                    cut = m.end()
            text = buf[cut:max(cut, len(buf) - max(self._max_special - 1, 0))]  # no special can start in it
            keep = cut
            for m in self._pat.finditer(text):
                # a match is final once nothing it looked at lies past the end: its end and LOOKAHEAD chars
                if m.end() >= len(text) or m.start() + LOOKAHEAD > len(text):
                    break
                out.extend(self._bpe(m.group()))
                keep = cut + m.end()
            buf = buf[keep:]
            yield from out
        yield from self.encode(buf)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``: their bytes joined, then decoded as UTF-8 (an incomplete character, as a cut in the
        middle of one produces, becomes U+FFFD). Special tokens decode to their strings (so ``decode(encode(x))
        == x`` for every ``x``), or to nothing with ``skip_special_tokens``.

        Raises:
            TokenizerError: an id outside ``0..vocab_size-1``.
        """
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise TokenizerError(f"id {bad} is not in this tokenizer's vocabulary (0..{self.vocab_size - 1}): was "
                                 "it made by another tokenizer?")
        table = self._table_no_specials if skip_special_tokens else self._table
        return b"".join([table[i] for i in ids]).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """No chat tokens: the plain-text template of :func:`shared.data.tokenizer.plain_chat_template`."""
        return plain_chat_template(messages, add_generation_prompt)

    def chars_per_token(self, texts: Sequence[str]) -> float:
        """Characters per token over ``texts``: the compression the vocabulary buys (a char model has 1.0)."""
        return sum(len(t) for t in texts) / max(1, sum(len(ids) for ids in self.encode_batch(texts)))

    # ---- encoding one pre-token ----

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append the ids of ``text``, which holds no special token, to ``out``."""
        cache = self._cache
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                ids = cache[piece] = self._bpe(piece)
            out.extend(ids)

    def _bpe(self, piece: str) -> list[int]:
        """Merge the bytes of one pre-token: always the adjacent pair of lowest rank, until none has a rank
        (GPT-2's ``bpe()``; the same order training learned them in)."""
        word = list(_utf8(piece))
        rank_of, by_rank = self._ranks.get, self._by_rank
        while len(word) > 1:
            # ranks count from 1, so filter(None, ...) drops the pairs without one (all in C, no key function)
            rank = min(filter(None, map(rank_of, pairwise(word))), default=0)
            if not rank:
                break
            word = _merge(word, *by_rank[rank])
        return word

    # ---- on disk ----

    def _payload(self) -> str:
        """The canonical JSON of the tokenizer: what :meth:`save` writes and :attr:`sha256` hashes. Tokens are
        written with GPT-2's byte-to-character map (:func:`bytes_to_unicode`), as in its ``vocab.json``."""
        return json.dumps({
            "format": FORMAT, "version": 1, "pattern": self.pattern, "special_tokens": self.special_tokens,
            "roles": self.roles, "vocab": {_to_text(b): i for i, b in enumerate(self.vocab)},
            "merges": [f"{_to_text(x)} {_to_text(y)}" for x, y in self.merges],
        }, ensure_ascii=False, indent=1) + "\n"

    def save(self, path: str | Path) -> Path:
        """Atomically write the tokenizer as JSON (``<name>.bpe.json`` is what :func:`shared.data.tokenizer.
        load_tokenizer` recognises); its sha256 is :attr:`sha256`."""
        return atomic_write_text(Path(path), self._payload())

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a file written by :meth:`save`.

        Raises:
            TokenizerError: the file is missing, not one of these, or its vocabulary disagrees with its merges.
        """
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} not found: run the tokenizer stage first")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                raise ValueError(f"its format is {d.get('format')!r}, not {FORMAT!r}")
            merges = [tuple(map(_from_text, m.split(" "))) for m in d["merges"]]
            tok = cls(merges, d["special_tokens"], d["roles"], d["pattern"])
            vocab = {_from_text(s): i for s, i in d["vocab"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TokenizerError(f"{path} is not a byte-level BPE file ({e}); delete it and train it again") from e
        if vocab != {b: i for i, b in enumerate(tok.vocab)}:
            raise TokenizerError(f"{path}: its vocab does not match the one its merges build (was it edited?); "
                                 "delete it and train it again")
        return tok


# ---- training ----

class _Desc:
    """Reverses the order of a key, so the min-heap pops the lexicographically *greatest* pair among equal counts."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[bytes, bytes]) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        return self.key > other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.key == other.key


def count_pre_tokens(documents: Iterable[str], special_tokens: Sequence[str] = DEFAULT_SPECIALS,
                     pre_tokenizer: Callable[[str], Iterable[str]] | None = None) -> Counter[str]:
    """How often each pre-token occurs; special tokens are cut out first, so no merge learns across one."""
    split = regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)))
    findall = pre_tokenizer or regex.compile(GPT2_PATTERN).findall
    counts: Counter[str] = Counter()
    for doc in documents:
        for part in (split.split(doc) if special_tokens else [doc]):
            counts.update(findall(part))
    return counts


def learn_merges(counts: dict[str, int], n_merges: int, n_specials: int = 0) -> list[tuple[bytes, bytes]]:
    """BPE merges over the pre-tokens' counts, until ``256 + n_merges`` distinct tokens exist.

    Pair counts are updated incrementally: a merge touches only the words that hold its pair (found through the
    index pair -> words), and a heap with lazy deletion (stale entries are skipped when popped) finds the most
    frequent pair without scanning all of them.

    Raises:
        TokenizerError: the text runs out of pairs before the vocabulary is full (names ``data.vocab_size``).
    """
    words = [list(_utf8(w)) for w in counts]
    freqs = list(counts.values())
    vocab = [bytes([i]) for i in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> the words that hold it
    for w, (word, f) in enumerate(zip(words, freqs, strict=True)):
        for p in pairwise(word):
            pair_counts[p] = pair_counts.get(p, 0) + f
            where.setdefault(p, set()).add(w)
    heap = [(-c, _Desc((vocab[a], vocab[b])), a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    learned: set[tuple[bytes, bytes]] = set()
    while len(vocab) < 256 + n_merges:
        while heap and pair_counts.get((heap[0][2], heap[0][3])) != -heap[0][0]:
            heapq.heappop(heap)  # stale: the pair's count changed after this entry was pushed
        if not heap:
            have = len(vocab) + n_specials
            raise TokenizerError(f"the training text has too few distinct byte pairs for data.vocab_size="
                                 f"{256 + n_merges + n_specials}: it fills only {have} ids. Set data.vocab_size to "
                                 f"{have} or less, or train on more text")
        _, _, a, b = heapq.heappop(heap)
        if (vocab[a], vocab[b]) not in learned:  # a pair comes back only if a reused id rebuilt one of its tokens
            learned.add((vocab[a], vocab[b]))
            merges.append((vocab[a], vocab[b]))
        new = index.get(vocab[a] + vocab[b])
        if new is None:
            new = index[vocab[a] + vocab[b]] = len(vocab)
            vocab.append(vocab[a] + vocab[b])
        del pair_counts[(a, b)]
        delta: dict[tuple[int, int], int] = {}
        for w in where.pop((a, b)):
            old, f = words[w], freqs[w]
            words[w] = merged = _merge(old, a, b, new)
            old_pairs, new_pairs = list(pairwise(old)), list(pairwise(merged))
            for p in old_pairs:
                delta[p] = delta.get(p, 0) - f
            for p in new_pairs:
                delta[p] = delta.get(p, 0) + f
            for p in set(old_pairs).difference(new_pairs):
                if p in where:
                    where[p].discard(w)
            for p in set(new_pairs).difference(old_pairs):
                where.setdefault(p, set()).add(w)
        for p, d in delta.items():
            if d == 0 or p == (a, b):
                continue
            c = pair_counts.get(p, 0) + d
            if c > 0:
                pair_counts[p] = c
                heapq.heappush(heap, (-c, _Desc((vocab[p[0]], vocab[p[1]])), p[0], p[1]))
            else:
                pair_counts.pop(p, None)
    return merges


def train_bpe(documents: Iterable[str], vocab_size: int, *, special_tokens: Sequence[str] = DEFAULT_SPECIALS,
              roles: dict[str, str] | None = None, pre_tokenizer: Callable[[str], Iterable[str]] | None = None,
              max_lines: int | None = None, seed: int = 0) -> BPETokenizer:
    """Train a byte-level BPE on ``documents``.

    Args:
        vocab_size: total ids: 256 bytes + the merges + the special tokens.
        special_tokens, roles: see :class:`BPETokenizer` (default: EOS ``<|endoftext|>``, BOS, PAD).
        pre_tokenizer: ``text -> pre-tokens``, replacing the GPT-2 regex (e.g. ``str.split`` for the textbook
            example); the tokenizer still encodes with the regex, so use it to study training only.
        max_lines: train on whole documents, drawn in a random order (``seed``) until they hold this many lines;
            None = every document.

    Raises:
        TokenizerError: ``vocab_size`` cannot hold the 256 bytes and the specials, or the text is too small to fill
            it (both name ``data.vocab_size`` and the value to set).
    """
    need = 256 + len(special_tokens)
    if vocab_size < need:
        raise TokenizerError(f"data.vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte ids + "
                             f"{len(special_tokens)} special tokens = {need}; set data.vocab_size to {need} or more "
                             "(a few thousand is usual)")
    if max_lines is not None:
        documents = list(documents)
        if sum(d.count("\n") + 1 for d in documents) > max_lines:
            order = list(range(len(documents)))
            random.Random(seed).shuffle(order)
            kept, lines = [], 0
            for i in order:
                if lines >= max_lines:
                    break
                kept.append(documents[i])
                lines += documents[i].count("\n") + 1
            documents = kept
    counts = count_pre_tokens(documents, special_tokens, pre_tokenizer)
    merges = learn_merges(counts, vocab_size - need, len(special_tokens))
    return BPETokenizer(merges, special_tokens, roles)
