"""The hand-written byte-level BPE: the textbook merges, incremental counts == recounting, Hugging Face's ids from the
same merges, lossless round trip, streaming == whole-text encoding, save/load, special tokens, errors."""

import random
from collections import Counter
from itertools import pairwise

import pytest

from shared.data.bpe import (
    DEFAULT_SPECIALS,
    BPETokenizer,
    bytes_to_unicode,
    count_pre_tokens,
    learn_merges,
    train_bpe,
)
from shared.data.lm import EDGE_CASES
from shared.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer
from shared.testing import fake_documents, mirror_has

# lm.EDGE_CASES plus what a byte-level regex tokenizer can trip on: contractions, every control character, unicode
# whitespace, combining marks and ZWJ emoji sequences, a BOM, special tokens' strings and their fragments.
MORE_EDGE_CASES = [*EDGE_CASES, "we'll they're I'M it's 's 'S ''ll", "".join(map(chr, range(0x20))) + "\x7f",
                   "\x1c\x1d\x1e\x1f \x85 \xa0 \u2028 \u3000 x", "👩‍👩‍👧 🇫🇷 e\u0301 ﷽", "\ufeffbom", "   \n  \r\n\t x  ",
                   "<|endoftext|>a<|bos|> <|pad|><|endoftext|", "<|endoftext|> is a special here", "a" * 3000]
CS336_TEXT = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"


@pytest.fixture(scope="module")
def tok():
    return train_bpe(fake_documents(300), vocab_size=400)


@pytest.fixture(scope="module")
def shakespeare():
    if not mirror_has("tiny_shakespeare/input.txt"):
        pytest.skip("tiny_shakespeare mirror not available")
    from shared.data.corpus import CorpusConfig, load_corpus

    corpus = load_corpus(CorpusConfig(corpus="tiny_shakespeare"))
    return corpus, train_bpe(corpus.train, vocab_size=1024)


def test_the_textbook_example_learns_the_expected_merges_in_order():
    # Sennrich et al. 2016's dictionary {low: 5, lower: 2, newest: 6, widest: 3} as CS336 assignment 1 states it
    # (bytes, whitespace pre-tokens, no end-of-word symbol). The first merge is a tie, (e, s) vs (s, t), both 9:
    # the lexicographically greater pair wins.
    merges = train_bpe([CS336_TEXT], 256 + 12, special_tokens=(), pre_tokenizer=str.split).merges
    assert [f"{a.decode()} {b.decode()}" for a, b in merges] == [
        "s t", "e st", "o w", "l ow", "w est", "n e", "ne west", "w i", "wi d", "wid est", "low e", "lowe r"]


def test_ties_go_to_the_lexicographically_greatest_byte_pair():
    assert learn_merges({"ab": 1, "cd": 1, "ba": 1}, 1) == [(b"c", b"d")]
    assert learn_merges({"zz": 1, "ab": 2}, 1) == [(b"a", b"b")]  # a higher count beats any tie-break


def _recount_merges(counts: dict[str, int], n: int) -> list[tuple[bytes, bytes]]:
    """The textbook algorithm, no index, no heap: recount every pair after every merge."""
    words = {tuple(bytes([b]) for b in w.encode()): c for w, c in counts.items()}
    merges = []
    for _ in range(n):
        pairs = Counter()
        for w, c in words.items():
            for p in pairwise(w):
                pairs[p] += c
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return merges


def test_incremental_pair_counts_give_the_merges_of_recounting_from_scratch():
    counts = count_pre_tokens([*fake_documents(60), "aaaa aaa aa abab ababab ' '' ''' \n\n\n  "])
    assert learn_merges(counts, 150) == _recount_merges(counts, 150)


def _hf_twin(t: BPETokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    table = bytes_to_unicode()
    text = lambda b: "".join(table[x] for x in b)  # noqa: E731
    hf = tokenizers.Tokenizer(models.BPE({text(b): i for i, b in enumerate(t.vocab)},
                                         [(text(a), text(b)) for a, b in t.merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([tokenizers.AddedToken(s, normalized=False) for s in t.special_tokens])
    assert [hf.token_to_id(s) for s in t.special_tokens] == [t.special_ids[s] for s in t.special_tokens]
    return hf


def test_hugging_face_byte_level_bpe_gives_the_same_ids_from_the_same_merges(tok):
    hf = _hf_twin(tok)
    for text in [*fake_documents(100, seed=4), *MORE_EDGE_CASES]:
        assert hf.encode(text).ids == tok.encode(text), repr(text)


def test_on_tiny_shakespeare_ids_equal_hugging_faces_and_every_val_document_round_trips(shakespeare):
    corpus, t = shakespeare
    hf = _hf_twin(t)
    docs = corpus.val[:1000]
    assert len(docs) > 700
    ours = t.encode_batch(docs)
    assert [e.ids for e in hf.encode_batch(docs)] == ours
    assert [t.decode(ids) for ids in ours] == docs
    assert t.chars_per_token(docs) > 2.3  # 1,024 ids already compress Shakespeare well past characters


def test_round_trip_is_exact_and_the_tokenizer_satisfies_the_interface(tok):
    assert isinstance(tok, Tokenizer)
    for text in [*fake_documents(50, seed=1), *MORE_EDGE_CASES]:
        assert tok.decode(tok.encode(text)) == text, repr(text)
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # half a character: replaced, not an exception
    assert tok.chars_per_token(fake_documents(20, seed=2)) > 2.0
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == "User: Hi\n\nAssistant:"


def test_id_layout_bytes_then_merges_then_specials(tok):
    assert tok.vocab_size == 400 == len(tok.vocab) + len(DEFAULT_SPECIALS)
    assert all(tok.vocab[i] == bytes([i]) for i in range(256))
    assert tok.encode("\x00\xff") == [0, 0xC3, 0xBF]  # unmerged bytes are their own ids (ÿ is 2 bytes in UTF-8)
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (397, 398, 399)
    assert len(set(tok.vocab)) == len(tok.vocab)  # every id has its own bytes


def test_special_tokens_are_never_split_and_never_made_from_ordinary_text(tok):
    assert tok.encode("<|endoftext|>") == [tok.eos_id]
    ids = tok.encode("one<|bos|>two<|endoftext|><|pad|>")
    assert ids.count(tok.bos_id) == ids.count(tok.eos_id) == ids.count(tok.pad_id) == 1
    assert ids[ids.index(tok.bos_id) + 1:ids.index(tok.eos_id)] == tok.encode("two")
    text = " ".join(fake_documents(5)) + " <|endoftext <|bos| |>"
    assert not set(tok.encode(text)) & {tok.eos_id, tok.bos_id, tok.pad_id}
    assert tok.decode(tok.encode("a<|bos|>b"), skip_special_tokens=True) == "ab"
    # training cuts specials out: no merge learns across one, or from the bytes of one
    t = train_bpe(["x<|endoftext|>y"] * 50 + ["hello world"] * 5, vocab_size=256 + 3 + 5)
    assert all(set(a + b) <= set(b"hello world") for a, b in t.merges)  # "<|" (50 times) would be the first


def test_encode_iterable_on_a_file_read_in_small_chunks_equals_encode(tok, tmp_path):
    text = "\n\n".join([*fake_documents(40, seed=5), *MORE_EDGE_CASES])
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8", newline="")
    for size in (1, 7, 64):
        with open(path, encoding="utf-8", newline="") as f:
            assert list(tok.encode_iterable(iter(lambda: f.read(size), ""))) == tok.encode(text), size  # noqa: B023
    with open(path, encoding="utf-8", newline="") as f:
        assert list(tok.encode_iterable(f)) == tok.encode(text)  # line by line


def test_encode_iterable_is_independent_of_where_the_chunks_are_cut():
    # a vocabulary that merges contractions and specials' neighbours, so a wrong cut would change the ids
    t = train_bpe(["we'll they're we've it's<|endoftext|>  spaced   out 123 4567 !!?"] * 30, vocab_size=290)
    pieces = ["we'll", "'ll", "'", "l", "re", "'re", "'v", "e", " ", "  ", "\n", "\r\n", "<|endoftext|>", "<|endof",
              "text|>", "<|bos|>", "<|", "|>", "spaced", " out", "123", " 4", "é", "🙂", "!!", "\t"]
    rng = random.Random(0)
    for _ in range(2000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 25)))
        cuts = sorted(rng.sample(range(len(s) + 1), min(len(s) + 1, rng.randrange(0, 8))))
        chunks = [s[i:j] for i, j in zip([0, *cuts], [*cuts, len(s)], strict=True)]
        assert list(t.encode_iterable(chunks)) == t.encode(s), chunks


def test_save_load_gives_identical_ids_and_hash_and_bad_files_are_clear_errors(tok, tmp_path):
    path = tok.save(tmp_path / "tok.bpe.json")
    again = BPETokenizer.load(path)
    assert again.sha256 == tok.sha256
    assert isinstance(load_tokenizer(path), BPETokenizer)
    for text in MORE_EDGE_CASES:
        assert again.encode(text) == tok.encode(text)
    assert train_bpe(fake_documents(300), vocab_size=400).sha256 == tok.sha256  # deterministic
    assert '"Ġt"' in path.read_text(encoding="utf-8")  # GPT-2's readable byte characters, as in its vocab.json
    with pytest.raises(TokenizerError, match="not found"):
        BPETokenizer.load(tmp_path / "missing.bpe.json")
    (tmp_path / "bad.bpe.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a byte-level BPE file"):
        BPETokenizer.load(tmp_path / "bad.bpe.json")
    edited = path.read_text(encoding="utf-8").replace('"Ġt"', '"Ġq"', 1)
    (tmp_path / "edited.bpe.json").write_text(edited, encoding="utf-8")
    with pytest.raises(TokenizerError, match="does not match"):
        BPETokenizer.load(tmp_path / "edited.bpe.json")


def test_bad_input_is_a_clear_error(tok):
    with pytest.raises(TokenizerError, match=r"data.vocab_size=100 is too small.*259 or more"):
        train_bpe(["abc"], vocab_size=100)
    with pytest.raises(TokenizerError, match=r"data.vocab_size=500.*fills only 262 ids. Set data.vocab_size to 262"):
        train_bpe(["abc abc"], vocab_size=500)  # "abc", " abc": 3 merges (bc, a+bc, " "+abc), then no pair is left
    with pytest.raises(TokenizerError, match="id 400 is not in"):
        tok.decode([1, 400])
    with pytest.raises(TokenizerError, match="lone UTF-16 surrogate"):
        tok.encode("bad \ud800 text")
    with pytest.raises(TokenizerError, match="role 'bos'"):
        BPETokenizer([], special_tokens=["<s>"], roles={"bos": "<|bos|>"})


def test_max_lines_samples_whole_documents_deterministically():
    docs = [f"line {i}\nsecond {i}" for i in range(100)]
    a = train_bpe(docs, vocab_size=270, max_lines=40, seed=1)
    assert a.sha256 == train_bpe(docs, vocab_size=270, max_lines=40, seed=1).sha256
    assert a.sha256 != train_bpe(docs, vocab_size=270, max_lines=40, seed=2).sha256
    assert train_bpe(iter(docs), vocab_size=270, max_lines=10_000).sha256 == train_bpe(docs, vocab_size=270).sha256
