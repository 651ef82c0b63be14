"""Char data: tokenizer round trip and errors, the 90/10 split, shifted targets, reproducible batches."""

import pytest
import torch

from shared.data.sampling import random_batch
from shared.data.text import BlockDataset, CharTokenizer, load_text, split_ids


def test_char_tokenizer_round_trip_and_save_load(tmp_path):
    text = "To be, or not to be: that is the question.\nÆ unicode ✓"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("\n ") == [0, 1]  # sorted vocabulary: newline, then space, before any letter
    tok.save(tmp_path / "tok.json")
    assert CharTokenizer.load(tmp_path / "tok.json").chars == tok.chars
    with pytest.raises(ValueError, match="'z' is not in"):
        tok.encode("z")
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.from_text("")


def test_split_keeps_order_first_90_percent_for_training():
    ids = torch.arange(100)
    train, val = split_ids(ids, 0.1)
    assert torch.equal(train, torch.arange(90))
    assert torch.equal(val, torch.arange(90, 100))
    with pytest.raises(ValueError, match="val_frac"):
        split_ids(ids, 1.0)


def test_target_is_the_input_shifted_by_one():
    data = torch.arange(50)
    ds = BlockDataset(data, block_size=8)
    assert len(ds) == 42
    x, y = ds[5]
    assert torch.equal(x, torch.arange(5, 13))
    assert torch.equal(y, torch.arange(6, 14))
    bx, by = random_batch(data, 4, 8, seed=0, index=3)
    assert bx.shape == by.shape == (4, 8)
    assert torch.equal(by[:, :-1], bx[:, 1:])
    assert torch.equal(by[:, -1], bx[:, -1] + 1)
    with pytest.raises(ValueError, match="too few"):
        BlockDataset(torch.arange(8), block_size=8)


def test_batches_are_a_pure_function_of_seed_and_step():
    data = torch.arange(1000)
    a, b = random_batch(data, 4, 8, 0, 7), random_batch(data, 4, 8, 0, 7)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], random_batch(data, 4, 8, 0, 8)[0])
    assert not torch.equal(a[0], random_batch(data, 4, 8, 1, 7)[0])


def test_load_text_reads_a_registered_corpus_through_the_mirror(fake_text):
    text = load_text("fake_text")
    assert len(text) >= 20_000
    assert "to be or not to be," in text


def test_too_little_data_for_the_block_size_is_a_project_error_naming_the_key_and_the_fix():
    from shared.data.fetch import DatasetError
    from shared.data.sampling import TooFewTokensError

    with pytest.raises(TooFewTokensError) as e:
        BlockDataset(torch.arange(100), block_size=256, what="the validation split")
    assert isinstance(e.value, DatasetError)  # explained by shared.cli.run_week
    assert str(e.value) == ("the validation split has 100 tokens, too few for model.block_size=256: one window needs "
                            "block_size + 1 = 257 tokens. Fix: lower model.block_size to at most 99, or give it more "
                            "text (a larger corpus; for the validation split, a larger data.val_frac).")
    with pytest.raises(TooFewTokensError, match="model.block_size=64"):
        random_batch(torch.arange(10), 2, 64, seed=0, index=0)


def test_load_text_of_a_registered_file_that_is_not_utf8_names_it(aifs_dirs, monkeypatch):
    import hashlib

    from shared.data import registry
    from shared.data.corpus import CorpusError
    from shared.data.registry import DatasetSpec, FileSpec

    blob = "na\u00efve".encode("latin-1")
    (aifs_dirs["mirror"] / "latin").mkdir()
    (aifs_dirs["mirror"] / "latin" / "input.txt").write_bytes(blob)
    spec = DatasetSpec("latin", (FileSpec("latin/input.txt", hashlib.sha256(blob).hexdigest(), len(blob)),),
                       license="-", description="-")
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"]))
    with pytest.raises(CorpusError, match=r"latin/input.txt is not UTF-8 text: byte 0xef at offset 2"):
        load_text("latin")
