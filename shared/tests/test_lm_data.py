"""The library's LM data path: corpus -> tokenizer (hand BPE or sentencepiece) -> packed streams, per namespace, each
stage reused once it verifies."""

import numpy as np
import pytest

from shared.data.bpe import BPETokenizer
from shared.data.lm import LMDataConfig, prepare_lm_data
from shared.data.spm_tokenizer import SentencePieceTokenizer
from shared.data.tokenizer import TokenizerError, load_tokenizer
from shared.testing import fake_documents


def test_prepare_lm_data_builds_then_reuses_verified_outputs_per_namespace(tmp_path, aifs_dirs):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, doc in enumerate(fake_documents(200)):
        (folder / f"{i:03d}.txt").write_text(doc)
    cfg = LMDataConfig(corpus=str(folder), vocab_size=400, pad_vocab_to=64)
    first = prepare_lm_data(cfg, "week99", block_size=16, roundtrip_docs=20)
    assert (first.tokenizer.skipped, first.packed.skipped) == (False, False)
    assert first.tokenizer.path.is_relative_to(aifs_dirs["models"] / "week99")
    assert first.packed.dir.is_relative_to(aifs_dirs["runs"] / "week99")
    assert first.vocab_size == 448  # 400 ids padded to a multiple of 64
    assert first.tokenizer.roundtrip_ok == first.tokenizer.roundtrip_n == 20
    bos = first.tokenizer.tokenizer.bos_id
    assert int((np.asarray(first.train) == bos).sum()) == len(first.corpus.train)  # one BOS per document
    again = prepare_lm_data(cfg, "week99", block_size=16, roundtrip_docs=20)
    assert (again.tokenizer.skipped, again.packed.skipped) == (True, True)
    assert np.array_equal(again.val, first.val)
    other = prepare_lm_data(cfg, "week98", block_size=16, roundtrip_docs=20)  # another week's own folders
    assert not other.tokenizer.skipped
    assert other.packed.dir != first.packed.dir


def test_both_tokenizer_kinds_coexist_and_an_unknown_kind_names_data_tokenizer(tmp_path, aifs_dirs):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, doc in enumerate(fake_documents(100)):
        (folder / f"{i:03d}.txt").write_text(doc)
    out = {}
    for kind, cls in (("bpe", BPETokenizer), ("sentencepiece", SentencePieceTokenizer)):
        cfg = LMDataConfig(corpus=str(folder), vocab_size=400, tokenizer=kind)
        out[kind] = data = prepare_lm_data(cfg, "week99", block_size=16, roundtrip_docs=10)
        assert isinstance(data.tokenizer.tokenizer, cls)
        assert isinstance(load_tokenizer(data.tokenizer.path), cls)
        assert data.tokenizer.roundtrip_ok == data.tokenizer.roundtrip_n
        assert data.tokenizer.edge_cases_ok
        assert data.train.dtype == np.uint16  # the same packed format whichever tokenizer made it
        assert int((np.asarray(data.val) == data.tokenizer.tokenizer.bos_id).sum()) == len(data.corpus.val)
    assert out["bpe"].tokenizer.path.name.endswith(".bpe.json")
    assert out["sentencepiece"].tokenizer.path.suffix == ".model"
    assert out["bpe"].tokenizer.path.parent == out["sentencepiece"].tokenizer.path.parent
    assert out["bpe"].packed.dir != out["sentencepiece"].packed.dir
    again = prepare_lm_data(LMDataConfig(corpus=str(folder), vocab_size=400), "week99", block_size=16, roundtrip_docs=10)
    assert again.tokenizer.skipped  # the sentencepiece run left the BPE's files alone
    assert again.packed.skipped
    with pytest.raises(TokenizerError, match="data.tokenizer='wordpiece'.*bpe, sentencepiece"):
        prepare_lm_data(LMDataConfig(corpus=str(folder), tokenizer="wordpiece"), "week99", block_size=16)
