"""Week 5's test fixtures: a small folder corpus that a tiny model learns in a few steps."""

import pytest

LINES = ["to be or not to be, that is the question.", "all the world's a stage, and all the men merely players.",
         "the quick brown fox jumps over the lazy dog.", "now is the winter of our discontent."]


@pytest.fixture
def corpus_dir(tmp_path, aifs_dirs):
    """A folder corpus of 120 small documents built from a few fixed lines (learnable in a few steps)."""
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(4):
        docs = [" ".join(LINES[(j + k) % 4] for k in range(1 + j % 3)) for j in range(i * 30, i * 30 + 30)]
        docs = [f"{doc} ({i * 30 + n})" for n, doc in enumerate(docs)]  # distinct documents
        (d / f"part{i}.txt").write_text("\n<|sep|>\n".join(docs))
    return d
