"""The sentencepiece BPE (the library reference): lossless round trip (unicode, whitespace), special ids, determinism,
save/load, errors."""

import pytest

from shared.data.spm_tokenizer import SPECIALS, SentencePieceTokenizer, train_sentencepiece
from shared.data.tokenizer import TokenizerError
from shared.testing import fake_documents

EDGE_CASES = ["", " ", "  two  spaces  ", "\n\nblank lines\n\n", "tab\tand\r\nCRLF", "unicode: é ✓ 日本語 🙂",
              "digits 1234567890", "<|endoftext|> is plain text here", "\x00 control"]


@pytest.fixture(scope="module")
def tok():
    return train_sentencepiece(fake_documents(300), vocab_size=400)


def test_round_trip_is_exact_on_documents_and_edge_cases(tok):
    for text in [*fake_documents(50, seed=1), *EDGE_CASES]:
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_special_ids_are_fixed_and_vocab_size_is_as_asked(tok):
    assert (tok.sp.unk_id(), tok.bos_id, tok.eos_id, tok.pad_id) == tuple(SPECIALS.values())
    assert tok.vocab_size == 400
    assert tok.bos_id not in tok.encode(" ".join(fake_documents(5)))  # specials are never produced by text


def test_bpe_compresses_and_training_is_deterministic(tok):
    assert tok.chars_per_token(fake_documents(20, seed=2)) > 2.0
    assert train_sentencepiece(fake_documents(300), vocab_size=400).sha256 == tok.sha256


def test_save_load_and_bad_files(tok, tmp_path):
    tok.save(tmp_path / "tok.model")
    again = SentencePieceTokenizer.load(tmp_path / "tok.model")
    assert again.sha256 == tok.sha256
    assert again.encode("hello world") == tok.encode("hello world")
    with pytest.raises(TokenizerError, match="not found"):
        SentencePieceTokenizer.load(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        SentencePieceTokenizer.load(tmp_path / "bad.model")
    with pytest.raises(TokenizerError, match="too small"):
        train_sentencepiece(["abc"], vocab_size=100)
    # sentencepiece's own "Vocabulary size too high" is wrapped: it names the config key and the size that fits
    with pytest.raises(TokenizerError, match=r"data.vocab_size=400 (.|\n)*set data.vocab_size to \d+ or less"):
        train_sentencepiece(["abc def ghi"] * 3, vocab_size=400)
    # ... and "smaller than required_chars" (characters + 256 byte pieces + specials) asks for a larger one
    with pytest.raises(TokenizerError, match=r"data.vocab_size=262 is too small (.|\n)*set data.vocab_size to 2\d\d or more"):
        train_sentencepiece(["hello world é ✓ 日本語 the quick brown fox"] * 50, vocab_size=262)
