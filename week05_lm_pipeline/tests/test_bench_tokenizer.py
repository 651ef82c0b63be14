"""The tokenizer bench at a tiny size: one row per tokenizer with every column, and the CSV written (no timings
asserted: they depend on the machine)."""

import pandas as pd

from shared.testing import fake_documents
from week05_lm_pipeline.bench_tokenizer import COLUMNS, bench_tokenizers, main


def test_bench_writes_one_row_per_tokenizer_with_every_column(tmp_path):
    out = tmp_path / "bench.csv"
    df = bench_tokenizers(fake_documents(300), fake_documents(20, seed=1), vocab_size=400, out=out)
    assert list(df.columns) == COLUMNS
    assert list(df["tokenizer"]) == ["bpe", "sentencepiece"]
    assert list(df["vocab_size"]) == [400, 400]
    assert (df[["train_s", "encode_mb_per_s", "encode_warm_mb_per_s"]] > 0).all().all()
    assert (df["bytes_per_token"] > 1.0).all()  # both compress
    pd.testing.assert_frame_equal(pd.read_csv(out), df)


def test_the_cli_runs_on_a_folder_corpus(tmp_path, capsys):
    for i, doc in enumerate(fake_documents(200)):
        (tmp_path / f"{i:03d}.txt").write_text(doc)
    assert main([str(tmp_path / "b.csv"), "--vocab-size", "400", "--corpus", str(tmp_path)]) == 0
    assert "sentencepiece" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "b.csv")) == 2
