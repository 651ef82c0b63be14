"""The streaming detokeniser: never half a character, nothing lost, stop strings cut where they begin; the same text
as transformers' TextIteratorStreamer; stream_text over the decoder."""

import pytest
import torch

from shared.data.bpe import train_bpe
from shared.models.decode import SamplingConfig, generate
from shared.models.gpt import GPT, GPTConfig
from shared.models.text_stream import REPLACEMENT, TextStream, stream_text
from shared.profiling import torch_threads

MULTIBYTE = "Café 😀 naïve — 日本語 ok, ß!"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine (``make test -n 2``) their
    per-op barriers were seen to cost ~0.5 s a decoding step: one thread, restored after."""
    with torch_threads(1):
        yield


def byte_decode(ids):
    """A hand-made byte-level tokenizer: id = byte, decoded as UTF-8 with U+FFFD for an incomplete character."""
    return bytes(ids).decode("utf-8", errors="replace")


def pieces_decode(vocab):
    return lambda ids: "".join(vocab[i] for i in ids)


def run(ts, ids):
    out = [ts.push(i) for i in ids]
    return out, ts.flush()


@pytest.mark.parametrize("tokenizer", ["hand_bytes", "project_bpe"])
def test_multibyte_characters_split_over_tokens_are_never_emitted_half(tokenizer):
    if tokenizer == "hand_bytes":
        decode, ids = byte_decode, list(MULTIBYTE.encode())
    else:  # the project's byte-level BPE with no merge: every byte is its own token
        tok = train_bpe(["abc"], 256 + 3)
        decode, ids = tok.decode, tok.encode(MULTIBYTE)
    assert len(ids) == len(MULTIBYTE.encode()) > len(MULTIBYTE)  # é, 😀, 日... span 2-4 tokens
    ts = TextStream(decode)
    out, rest = run(ts, ids)
    assert all(REPLACEMENT not in p for p in out)
    assert "".join(out) + rest == MULTIBYTE == ts.text
    assert rest == ""
    assert "😀" in out
    assert out.count("") == len(ids) - len(MULTIBYTE)


def test_an_incomplete_character_at_the_end_comes_out_at_flush_as_the_full_decode_does():
    ids = list("ok é".encode())[:-1]  # the stream ends inside é
    ts = TextStream(byte_decode)
    out, rest = run(ts, ids)
    assert "".join(out) == "ok "
    assert rest == REPLACEMENT
    assert "".join(out) + rest == byte_decode(ids)


def test_an_invalid_byte_inside_the_text_is_emitted_once_the_text_goes_on():
    ids = [104, 0xC3, 105]  # "h", a lead byte with no continuation, "i"
    out, rest = run(TextStream(byte_decode), ids)
    assert "".join(out) + rest == byte_decode(ids) == "h" + REPLACEMENT + "i"


def test_a_decoder_that_drops_the_leading_space_keeps_every_space_when_streamed():
    # sentencepiece's Metaspace decoder: "▁" is a space, except at the start of the text
    vocab = ["▁The", "▁cat", "▁sat", ".", "▁on", "▁the", "▁mat"]

    def decode(ids):
        return "".join(vocab[i] for i in ids).replace("▁", " ").removeprefix(" ")

    ids = [0, 1, 2, 4, 5, 6, 3]
    assert "".join(decode([i]) for i in ids) == "Thecatsatonthemat."  # token by token loses the spaces
    out, rest = run(TextStream(decode), ids)
    assert "".join(out) + rest == decode(ids) == "The cat sat on the mat."


def test_the_concatenation_equals_the_full_decode_of_a_hugging_face_byte_level_bpe():
    pytest.importorskip("transformers")
    from shared.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(["hello world, the cat sat on the mat", MULTIBYTE] * 4, vocab_size=300)
    text = MULTIBYTE + "\nnew line, and  two spaces 🎉🎉"
    ids = tok.encode(text, add_special_tokens=False)
    out, rest = run(TextStream(lambda x: tok.decode(x, skip_special_tokens=True)), ids)
    assert "".join(out) + rest == text
    assert all(REPLACEMENT not in p for p in out)


def test_a_stop_string_spanning_two_tokens_stops_with_the_text_before_it():
    vocab = ["Hello", " Us", "er:", " more", " text"]
    ts = TextStream(pieces_decode(vocab), stop_strings=["User:"])
    assert ts.push(0) == "Hello"
    assert ts.push(1) == " "  # "Us" could begin "User:": held
    assert ts.push(2) == ""
    assert ts.stopped
    assert ts.stop_string == "User:"
    assert ts.push(3) == ""
    assert ts.flush() == ""
    assert ts.text == "Hello "


def test_without_a_stop_string_in_the_text_everything_comes_out():
    vocab = ["Hello", " Us", "ers", " are", " here", "\n\n", "User"]
    ids = list(range(len(vocab)))
    ts = TextStream(pieces_decode(vocab), stop_strings=["User:", "###"])
    out, rest = run(ts, ids)
    assert "".join(out) + rest == "".join(vocab)
    assert not ts.stopped
    assert rest == "User"  # a possible start of "User:" is held to the end, then released


def test_text_that_starts_like_a_stop_string_but_diverges_is_emitted_later_with_nothing_lost():
    vocab = ["a", "U", "s", "a", " U", "Us", "er", "!"]
    ts = TextStream(pieces_decode(vocab), stop_strings=["User:"])
    out = [ts.push(i) for i in range(len(vocab))]
    assert out == ["a", "", "", "Usa", " ", "U", "", "User!"]
    assert ts.flush() == ""
    assert ts.text == "aUsa UUser!"
    assert not ts.stopped


def test_the_earliest_of_several_stop_strings_wins_and_a_stop_string_at_the_start_emits_nothing():
    ts = TextStream(pieces_decode(["xx", "<e", "nd>", "###"]), stop_strings=["###", "<end>"])
    assert [ts.push(i) for i in range(4)] == ["xx", "", "", ""]
    assert ts.stop_string == "<end>"
    assert ts.text == "xx"
    ts = TextStream(pieces_decode(["###", "more"]), stop_strings=["###"])
    assert ts.push(0) == ""
    assert ts.stopped
    assert ts.text == ""


def test_stop_strings_with_multibyte_tokens():
    ids = list("naïve STOP here".encode())
    ts = TextStream(byte_decode, stop_strings=["STOP"])
    out, rest = run(ts, ids)
    assert "".join(out) + rest == "naïve "
    assert ts.stopped


def test_an_empty_stop_string_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        TextStream(byte_decode, stop_strings=["", "x"])


def test_same_text_as_transformers_text_iterator_streamer():
    """The library reference: transformers' TextIteratorStreamer over the same greedy generation of a tiny Llama."""
    pytest.importorskip("transformers")
    from transformers import TextIteratorStreamer

    from shared.models.tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer(["hello world, the cat sat on the mat.\n", MULTIBYTE] * 4, vocab_size=300)
    model = tiny_llama(len(tok), seed=1, tokenizer=tok).eval()
    model.generation_config.eos_token_id = None  # run all 60 steps
    prompt = torch.tensor([tok.encode("the cat " + MULTIBYTE, add_special_tokens=False)])
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    torch.manual_seed(0)  # sampled, not greedy: a random model's greedy text is one token repeated
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=60, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                             streamer=streamer, pad_token_id=0)
    reference = "".join(streamer)  # generate ran in this thread: the queue already holds everything
    new = out[0, prompt.shape[1]:].tolist()
    assert len(new) == 60
    assert len(reference) > 30
    assert " " in reference
    mine, rest = run(TextStream(lambda x: tok.decode(x, skip_special_tokens=True)), new)
    assert "".join(mine) + rest == reference == tok.decode(new, skip_special_tokens=True)
    # random bytes hold invalid sequences (U+FFFD inside the text), but no piece ends inside a character
    assert not any(p.endswith(REPLACEMENT) for p in mine)


# stream_text over shared.models.decode.stream: a random debug GPT over a 27-character alphabet
ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def _gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=64, n_layer=1, n_head=2, n_embd=16))


def _decode(ids):
    return "".join(ALPHABET[i] for i in ids)


def test_stream_text_yields_the_decoded_generation_and_counts_tokens():
    model, prompt = _gpt(), torch.tensor([[0, 1, 2]])
    cfg = SamplingConfig(max_new_tokens=20)
    full = generate(model, prompt, cfg)[0, 3:].tolist()
    tokens = []
    pieces = list(stream_text(model, _decode, prompt, cfg, tokens_out=tokens))
    assert "".join(pieces) == _decode(full)
    assert tokens == full


def test_stream_text_ends_at_a_stop_id_without_decoding_it():
    model, prompt = _gpt(), torch.tensor([[0, 1, 2]])
    full = generate(model, prompt, SamplingConfig(max_new_tokens=20))[0, 3:].tolist()
    stop = full[5]
    cut = full.index(stop)
    tokens = []
    text = "".join(stream_text(model, _decode, prompt, SamplingConfig(max_new_tokens=20, stop_ids=[stop]),
                               tokens_out=tokens))
    assert text == _decode(full[:cut])
    assert tokens == full[:cut + 1]


def test_stream_text_ends_at_a_stop_string_and_stops_decoding():
    model, prompt = _gpt(), torch.tensor([[0, 1, 2]])
    model.train()
    full = _decode(generate(model, prompt, SamplingConfig(max_new_tokens=30))[0, 3:].tolist())
    stop = full[8:10]
    tokens = []
    text = "".join(stream_text(model, _decode, prompt, SamplingConfig(max_new_tokens=30), stop_strings=[stop],
                               tokens_out=tokens))
    assert text == full[:full.index(stop)]
    assert len(tokens) == full.index(stop) + len(stop) < 30  # no token decoded past the stop string
    assert model.training  # the decoder was closed: the model's mode is restored


def test_stream_text_takes_one_sequence():
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        next(stream_text(_gpt(), _decode, torch.zeros(2, 3, dtype=torch.long), SamplingConfig()))
