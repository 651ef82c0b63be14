"""Streaming text out of a token stream: an incremental detokeniser that never prints half a character, and stop
strings.

A token is not a piece of text. A byte-level BPE (GPT-2's, SmolLM2's, :class:`shared.data.bpe.BPETokenizer`)
splits "é" (2 UTF-8 bytes) or an emoji (4) over several tokens, and the decode of a prefix of them ends in U+FFFD;
a sentencepiece-style decoder drops the space of a word that starts the text, so decoding token by token loses
the spaces. :class:`TextStream` decodes a short window of ids each step and emits only what can no longer change:

- the window starts one "printed" token back (its prefix) and the new text is the difference between the
  window's decode and the prefix's, as text-generation-inference's ``decode_token`` and vLLM's
  ``detokenize_incrementally`` do (https://github.com/huggingface/text-generation-inference/blob/main/server/
  text_generation_server/models/model.py, https://github.com/vllm-project/vllm/blob/main/vllm/
  transformers_utils/detokenizer_utils.py); a window whose decode ends in U+FFFD is an incomplete character and
  waits for the next token;
- text that could be the start of a stop string is held back until it is not (the rule of vLLM's and TGI's
  ``stop`` sequences; ``transformers``' ``generate(stop_strings=...)`` stops on them too, but keeps them in the
  output); when one appears the text before it is emitted and the stream is over.

The library reference is ``transformers``' ``TextStreamer`` / ``TextIteratorStreamer``
(https://huggingface.co/docs/transformers/internal/generation_utils#transformers.TextIteratorStreamer): it
re-decodes every token since the last newline and prints up to the last space. Both emit the same text in the end
(the test compares them); this one emits a word as soon as it is complete, at a cost per token bounded by the
window instead of the line.

:func:`stream_text` joins it to :func:`shared.models.decode.stream`: a prompt in, text pieces out, ending at a stop
id, a stop string or ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from shared.models.decode import SamplingConfig, stream

REPLACEMENT = "\ufffd"  # what a UTF-8 decode with errors="replace" puts for an incomplete character


class TextStream:
    """Token ids in, printable text out.

    ``push(id)`` returns the text that became final with that token (often ``""``); ``flush()`` returns the rest
    at the end. Without stop strings, ``"".join(pushes) + flush() == decode(all ids)`` for a decode that is
    prefix-stable over token windows (byte-level BPE, sentencepiece, character tokenizers).

    Args:
        decode: ids -> text, e.g. ``Tokenizer.decode`` (:mod:`shared.data.tokenizer`) or
            ``lambda ids: tok.decode(ids, skip_special_tokens=True)`` for a Hugging Face tokenizer.
        stop_strings: the text ends before the first of these to appear (the stop string itself is not emitted).

    Attributes:
        stopped: a stop string appeared; later pushes return ``""``.
        stop_string: which one (None until then).
        text: everything emitted so far.
        ids: every id pushed (including those after the last emitted character).
    """

    def __init__(self, decode: Callable[[list[int]], str], stop_strings: Sequence[str] = ()) -> None:
        if any(not s for s in stop_strings):
            raise ValueError(f"stop strings must be non-empty, got {list(stop_strings)!r}")
        self.decode = decode
        self.stop_strings = tuple(stop_strings)
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False
        self.stop_string: str | None = None
        self._prefix = 0  # ids[_prefix:_read] decoded to text already emitted (or held): the window's context
        self._read = 0  # ids before this are decoded
        self._held = ""  # decoded text that could begin a stop string

    def push(self, token_id: int) -> str:
        """Add one id; returns the text it made final ("" while a character or a possible stop string is open)."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        before = self.decode(self.ids[self._prefix:self._read])
        window = self.decode(self.ids[self._prefix:])
        if len(window) <= len(before) or window.endswith(REPLACEMENT):
            return ""  # nothing new yet (a special token decoded to nothing) or an incomplete character
        self._prefix, self._read = self._read, len(self.ids)
        return self._release(window[len(before):], final=False)

    def flush(self) -> str:
        """The text still held at the end of the stream: an incomplete character (as U+FFFD) and any text that
        started like a stop string but was never completed."""
        if self.stopped:
            return ""
        before = self.decode(self.ids[self._prefix:self._read])
        window = self.decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return self._release(window[len(before):], final=True)

    def _release(self, new: str, final: bool) -> str:
        """Append ``new`` to the held text; emit what cannot be (the start of) a stop string."""
        held = self._held + new
        hits = [(held.find(s), s) for s in self.stop_strings if s in held]
        if hits:
            at, self.stop_string = min(hits)
            self.stopped = True
            out, self._held = held[:at], ""
        else:
            keep = 0 if final else _open_stop_prefix(held, self.stop_strings)
            out, self._held = held[:len(held) - keep], held[len(held) - keep:]
        self.text += out
        return out


def _open_stop_prefix(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string (0: none)."""
    best = 0
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def stream_text(model: torch.nn.Module, decode: Callable[[list[int]], str], input_ids: torch.Tensor,
                cfg: SamplingConfig, stop_strings: Sequence[str] = (), attention_mask: torch.Tensor | None = None,
                use_cache: bool = True, generator: torch.Generator | None = None,
                tokens_out: list[int] | None = None) -> Iterator[str]:
    """Generate from one prompt and yield the answer as text pieces, as soon as each is final.

    Tokens come from :func:`shared.models.decode.stream` (same ``model``, ``cfg``, cache and generator); a stop id
    (``cfg.stop_ids``, e.g. EOS) ends the answer and is not decoded; a stop string ends it and is not emitted.
    Leaving the loop early (``break``, a closed generator) stops the decoding too.

    Args:
        decode: ids -> text (see :class:`TextStream`).
        input_ids: (1, T0) prompt ids (one sequence: the text of a batch would interleave).
        tokens_out: when given, every generated id is appended (stop ids included), e.g. to count tokens.

    Raises:
        ValueError: a batch of more than one sequence, or what :func:`~shared.models.decode.stream` raises.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"stream_text decodes one sequence: input_ids must be (1, T), got {tuple(input_ids.shape)}")
    text = TextStream(decode, stop_strings)
    stops = set(cfg.stop_ids)
    steps = stream(model, input_ids, cfg, attention_mask, use_cache, generator)
    try:
        for nxt in steps:
            token = int(nxt[0])
            if tokens_out is not None:
                tokens_out.append(token)
            if token in stops:
                break
            if piece := text.push(token):
                yield piece
            if text.stopped:
                return
        if rest := text.flush():
            yield rest
    finally:
        steps.close()  # restores the model's train/eval mode at once, not at garbage collection
