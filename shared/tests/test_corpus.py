"""Corpora: documents split on the separator, duplicates removed, a seeded split by document, clear errors."""

import pytest

from shared.data.corpus import (
    CorpusConfig,
    CorpusError,
    dedupe,
    load_corpus,
    load_documents,
    split_documents,
    split_text,
)
from shared.testing import mirror_has


def test_split_text_strips_and_drops_empty_documents():
    assert split_text("a b\n\n\n\nc\n\n  \n\nd ", "\n\n", "x") == ["a b", "c", "d"]
    with pytest.raises(CorpusError, match="empty"):
        split_text("  \n ", "\n\n", "x")
    with pytest.raises(CorpusError, match="no '<\\|endoftext\\|>' separator"):
        split_text("word " * 3000, "<|endoftext|>", "x")


def test_dedupe_keeps_the_first_copy_in_order():
    assert dedupe(["a", "b", "a", "c", "b"]) == (["a", "b", "c"], 2)


def test_split_is_by_document_seeded_and_disjoint():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split_documents(docs, 0.1, seed=0)
    assert len(val) == 10
    assert len(train) == 90
    assert not set(train) & set(val)
    assert (train, val) == split_documents(docs, 0.1, seed=0)
    assert val != split_documents(docs, 0.1, seed=1)[1]
    with pytest.raises(CorpusError, match="at least 2 documents"):
        split_documents(["only"], 0.1, 0)


def test_a_folder_of_txt_files_is_a_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("first story")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second story<|endoftext|>third story")
    assert load_documents(CorpusConfig(corpus=str(tmp_path)))[1] == ["first story", "second story<|endoftext|>third story"]
    docs = load_documents(CorpusConfig(corpus=str(tmp_path), separator="<|endoftext|>"))[1]
    assert docs == ["first story", "second story", "third story"]


def test_bad_corpora_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="neither a registered text corpus"):
        load_documents(CorpusConfig(corpus=str(tmp_path / "missing")))
    with pytest.raises(CorpusError, match="without .txt files"):
        load_documents(CorpusConfig(corpus=str(tmp_path)))
    (tmp_path / "empty.txt").write_text("\n\n  ")
    with pytest.raises(CorpusError, match="empty"):
        load_documents(CorpusConfig(corpus=str(tmp_path)))


@pytest.mark.skipif(not mirror_has("tiny_shakespeare/input.txt"), reason="tiny_shakespeare mirror not available")
def test_tiny_shakespeare_splits_into_speeches_without_leakage():
    corpus = load_corpus(CorpusConfig(corpus="tiny_shakespeare"))
    assert len(corpus.train) + len(corpus.val) > 7000  # ~7.2k speeches
    assert corpus.n_duplicates > 0  # short speeches ("Ay.", "No.") repeat
    assert not set(corpus.train) & set(corpus.val)
    assert corpus.train[0].split("\n")[0].endswith(":")  # a speech starts with its speaker


def test_a_registered_corpus_of_several_files_pools_their_documents(aifs_dirs, monkeypatch):
    import hashlib

    from shared.data import corpus as corpus_mod
    from shared.data import registry
    from shared.data.registry import DatasetSpec, FileSpec

    files = []
    for name, text in (("valid.txt", "v one<|endoftext|>\nv two<|endoftext|>"), ("train.txt", "t one<|endoftext|>v one")):
        blob = text.encode()
        (aifs_dirs["mirror"] / "stories").mkdir(exist_ok=True)
        (aifs_dirs["mirror"] / "stories" / name).write_bytes(blob)
        files.append(FileSpec(f"stories/{name}", hashlib.sha256(blob).hexdigest(), len(blob)))
    monkeypatch.setitem(registry.REGISTRY, "stories", DatasetSpec("stories", tuple(files), license="-", description="-"))
    monkeypatch.setitem(corpus_mod.SEPARATORS, "stories", "<|endoftext|>")
    monkeypatch.setenv("AIFS_DATA_MIRROR", str(aifs_dirs["mirror"]))
    assert load_documents(CorpusConfig(corpus="stories")) == ("stories", ["v one", "v two", "t one", "v one"])
    corpus = load_corpus(CorpusConfig(corpus="stories", val_frac=0.3))
    assert corpus.n_duplicates == 1
    assert sorted(corpus.train + corpus.val) == ["t one", "v one", "v two"]


def test_tinystories_is_registered_with_its_published_files_and_is_a_clear_error_offline(aifs_dirs):
    from shared.data.fetch import DatasetUnavailableError
    from shared.data.registry import get_spec

    spec = get_spec("tinystories")
    assert {f.relpath.rsplit("/", 1)[1]: f.size for f in spec.files} == {
        "TinyStoriesV2-GPT4-valid.txt": 22_502_601, "TinyStoriesV2-GPT4-train.txt": 2_227_753_162}
    assert all(f.urls[0].startswith("https://huggingface.co/datasets/roneneldan/TinyStories/") for f in spec.files)
    with pytest.raises(DatasetUnavailableError, match="TinyStoriesV2-GPT4-valid.txt is not available(.|\n)*Fix:"):
        load_corpus(CorpusConfig(corpus="tinystories"))


def test_a_file_that_is_not_utf8_is_named_with_the_fix_and_explained_by_the_command_line(tmp_path, capsys):
    from shared.cli import run_week

    (tmp_path / "good.txt").write_text("a story")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError) as e:
        load_documents(CorpusConfig(corpus=str(tmp_path)))
    msg = str(e.value)
    assert msg.startswith(f"{bad} is not UTF-8 text: byte 0xe9 at offset 3")
    assert "Fix: convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8 latin1.txt" in msg

    def main():
        load_documents(CorpusConfig(corpus=str(tmp_path)))
        return 0

    assert run_week(main) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad} is not UTF-8 text")


def test_a_registered_corpus_is_verified_on_every_read(fake_text, aifs_dirs):
    """The text is read straight from the cache, whose checksum is checked at each load: an edited byte is an error
    naming the repair, never silently different training text."""
    from shared.data.fetch import ChecksumError

    cfg = CorpusConfig(corpus="fake_text", separator="\n")
    load_documents(cfg)
    cached = aifs_dirs["data"] / "fake_text" / "input.txt"
    cached.write_bytes(cached.read_bytes().replace(b"to be", b"to Be", 1))
    with pytest.raises(ChecksumError, match=r"fake_text/input.txt in the cache .*python -m shared.data fake_text"):
        load_documents(cfg)
