"""Packing: BOS/EOS framing, no token lost, padding ratio, the memmap file and its checks, batches from it."""

import numpy as np
import pytest
import torch

from shared.data.bpe import train_bpe
from shared.data.pack import (
    TokenFileError,
    TokenFileMeta,
    open_token_file,
    pack_documents,
    padding_ratio,
    token_dtype,
    write_token_file,
)
from shared.data.sampling import random_batch
from shared.testing import fake_documents


@pytest.fixture(scope="module")
def tok():
    return train_bpe(fake_documents(300), vocab_size=400)


def test_every_document_is_framed_and_no_token_is_lost(tok):
    docs = [*fake_documents(20, seed=3), "x" * 5000]  # one document far longer than any block
    stream, lengths = pack_documents(docs, tok, batch=7)
    assert stream.dtype == np.uint16
    assert len(stream) == lengths.sum() == sum(len(tok.encode(d)) + 2 for d in docs)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for d, s, n in zip(docs, starts, lengths, strict=True):
        assert stream[s] == tok.bos_id
        assert stream[s + n - 1] == tok.eos_id
        assert tok.decode(stream[s + 1:s + n - 1]) == d


def test_padding_ratio_of_one_row_per_document():
    assert padding_ratio(np.array([4, 4]), 4) == 0.0
    assert padding_ratio(np.array([2, 6]), 4) == pytest.approx(1 - 8 / 12)  # rows: 1 + 2, 12 slots, 8 tokens
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


def _meta(stream, sha="abc"):
    return TokenFileMeta(len(stream), 2, str(stream.dtype), 400, sha, 1, 2)


def test_written_file_maps_back_and_feeds_shifted_batches(tmp_path):
    stream = np.arange(1000, dtype=np.uint16)
    write_token_file(tmp_path / "train.bin", stream, _meta(stream))
    data, meta = open_token_file(tmp_path / "train.bin", tokenizer_sha256="abc")
    assert isinstance(data, np.memmap)
    assert np.array_equal(data, stream)
    assert meta.tokens == 1000
    x, y = random_batch(data, 4, 16, seed=0, index=5)
    assert x.dtype == torch.int64
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # this stream counts up
    tx, _ = random_batch(torch.from_numpy(stream.astype(np.int64)), 4, 16, seed=0, index=5)
    assert torch.equal(tx, x)  # memmap and tensor streams give the same batch


def test_truncated_missing_or_foreign_files_are_clear_errors(tmp_path):
    stream = np.arange(100, dtype=np.uint16)
    path = write_token_file(tmp_path / "val.bin", stream, _meta(stream))
    with pytest.raises(TokenFileError, match="packed with tokenizer abc"):
        open_token_file(path, tokenizer_sha256="def")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TokenFileError, match="truncated or corrupt"):
        open_token_file(path)
    with pytest.raises(TokenFileError, match="missing: run the pack stage"):
        open_token_file(tmp_path / "train.bin")


def test_split_documents_reads_back_every_document_and_refuses_broken_framing(tmp_path, tok):
    from shared.data.pack import split_documents

    docs = [*fake_documents(15, seed=5), ""]  # an empty document is BOS, EOS
    stream, _ = pack_documents(docs, tok)
    path = write_token_file(tmp_path / "x.bin", stream, TokenFileMeta(len(stream), len(docs), str(stream.dtype),
                                                                     tok.vocab_size, "sha", tok.bos_id, tok.eos_id))
    back = split_documents(open_token_file(path)[0], tok.bos_id, tok.eos_id)
    assert [tok.decode(ids) for ids in back] == docs
    assert split_documents(np.zeros(0, dtype=np.uint16), tok.bos_id, tok.eos_id) == []
    broken = stream.copy()
    broken[len(broken) // 2] = tok.eos_id  # a stray EOS inside a document
    with pytest.raises(TokenFileError, match="do not frame"):
        split_documents(broken, tok.bos_id, tok.eos_id)
    with pytest.raises(TokenFileError, match="do not frame"):
        split_documents(stream[:-1], tok.bos_id, tok.eos_id)  # the last EOS cut off


def test_a_token_file_whose_bytes_changed_after_packing_is_refused(tmp_path):
    import json

    from shared.data import pack

    stream = np.arange(500, dtype=np.uint16)
    path = write_token_file(tmp_path / "train.bin", stream, _meta(stream))
    assert json.loads(path.with_suffix(".json").read_text())["sha256"]  # recorded at write time
    open_token_file(path)
    data = bytearray(path.read_bytes())
    data[123] ^= 0x01  # same size: only the checksum can tell
    path.write_bytes(bytes(data))
    pack._VERIFIED.clear()  # a new process
    with pytest.raises(TokenFileError, match=r"train.bin has sha256 .* the file is corrupt; re-run the pack stage"):
        open_token_file(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["sha256"]  # a file packed before token files were checksummed
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(TokenFileError, match="records no sha256 of train.bin .* re-run the pack stage"):
        open_token_file(path)
