"""Week 6's test fixtures: a pool of fake documents with exact duplicates, near duplicates and junk, served in place
of the registered sources."""

import pytest

from shared.data.sources import Document
from shared.testing import fake_documents


def fake_pool(n: int = 300) -> list[Document]:
    """``n`` English-like documents, plus upper-cased copies (exact duplicates), copies with one word changed
    (near duplicates at a Jaccard well above 0.8 for long ones) and junk that the quality rules remove."""
    base = [" ".join(fake_documents(4, seed=i)) for i in range(n)]  # ~4 short documents joined: 40-150 words
    docs = [Document(t, "fake", f"fake:{i}") for i, t in enumerate(base)]
    docs += [Document(base[i].upper(), "fake", f"fake:{i}") for i in range(0, n, 10)]  # exact (after normalising)
    docs += [Document(base[i].replace(" the ", " a ", 1) + " the end.", "fake", f"fake:{i}")
             for i in range(5, n, 10)]  # near duplicates, in their original's group
    docs += [Document(t, "junk", f"junk:{k}") for k, t in enumerate(["ok.", "# # # # # the and", "1 2 3 4 5 6 7 8",
                                                                      "- a\n- b\n- c\n- d the"] * 5)]
    return docs


@pytest.fixture
def fake_sources(aifs_dirs, monkeypatch):
    """``week06_budget.data`` reads :func:`fake_pool` instead of the registered sources."""
    pool = fake_pool()
    monkeypatch.setattr("week06_budget.data.load_sources", lambda names: list(pool))
    monkeypatch.setattr("week06_budget.data.source_entries", lambda names: [])
    return pool
