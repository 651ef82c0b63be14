"""The BPE tokenizer: lossless round trip (unicode, whitespace), special ids, determinism, save/load, errors."""

import pytest

from shared.data.bpe import SPECIALS, BPETokenizer, train_bpe
from shared.data.tokenizer import TokenizerError
from shared.testing import fake_documents

EDGE_CASES = ["", " ", "  two  spaces  ", "\n\nblank lines\n\n", "tab\tand\r\nCRLF", "unicode: é ✓ 日本語 🙂",
              "digits 1234567890", "<|endoftext|> is plain text here", "\x00 control"]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(fake_documents(300), vocab_size=400)


def test_round_trip_is_exact_on_documents_and_edge_cases(tok):
    for text in [*fake_documents(50, seed=1), *EDGE_CASES]:
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_special_ids_are_fixed_and_vocab_size_is_as_asked(tok):
    assert (tok.sp.unk_id(), tok.bos_id, tok.eos_id, tok.pad_id) == tuple(SPECIALS.values())
    assert tok.vocab_size == 400
    assert tok.bos_id not in tok.encode(" ".join(fake_documents(5)))  # specials are never produced by text


def test_bpe_compresses_and_training_is_deterministic(tok):
    assert tok.chars_per_token(fake_documents(20, seed=2)) > 2.0
    assert train_bpe(fake_documents(300), vocab_size=400).sha256 == tok.sha256


def test_save_load_and_bad_files(tok, tmp_path):
    tok.save(tmp_path / "tok.model")
    again = BPETokenizer.load(tmp_path / "tok.model")
    assert again.sha256 == tok.sha256
    assert again.encode("hello world") == tok.encode("hello world")
    with pytest.raises(TokenizerError, match="not found"):
        BPETokenizer.load(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        BPETokenizer.load(tmp_path / "bad.model")
    with pytest.raises(TokenizerError, match="too small"):
        train_bpe(["abc"], vocab_size=100)
