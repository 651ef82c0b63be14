"""The parts of the whole-pipeline test (slow, in test_week05.py) that `make test` keeps, without the bench grid,
the ablation and the ladder: tokenizer -> pack -> train as one stage, the eval CLI against evaluate_checkpoint, the
tokenizer-mismatch error, and every stage run alone reusing what is on disk and writing no log."""

import json

import pytest

from shared.checkpoint import CheckpointError
from shared.data.bpe import train_bpe
from shared.data.tokenizer import BPE_SUFFIX
from shared.testing import fake_documents
from week05_lm_pipeline.__main__ import main
from week05_lm_pipeline.eval import evaluate_checkpoint
from week05_lm_pipeline.eval import main as eval_main
from week05_lm_pipeline.tests.test_week05 import _overrides


def _stage(capsys, stage: str, overrides: list[str]) -> dict:
    """Run one ``--stage`` and return the JSON summary it prints."""
    capsys.readouterr()
    assert main(["--profile", "smoke", "--stage", stage, *overrides]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index('{\n  "stage"'):])


def test_trained_checkpoint_the_eval_cli_and_stages_alone(corpus_dir, aifs_dirs, capsys):
    overrides = _overrides(corpus_dir)
    trained = _stage(capsys, "train", overrides)  # tokenizer -> pack -> train, nothing after
    assert trained["skipped"] is False
    best = next((aifs_dirs["runs"] / "week05" / "smoke").glob("gpt-*/checkpoints/best"))
    assert eval_main([str(best), "--batch-size", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == evaluate_checkpoint(str(best), batch_size=3)
    assert cli["perplexity"] > 1.0
    other = aifs_dirs["models"] / f"other{BPE_SUFFIX}"
    train_bpe(fake_documents(300), vocab_size=300).save(other)  # another vocabulary
    with pytest.raises(CheckpointError, match=r"trained with a \d+-id vocabulary"):
        evaluate_checkpoint(str(best), tokenizer=str(other))

    pack, again, ev = (_stage(capsys, s, overrides) for s in ("pack", "train", "eval"))
    assert pack["skipped"] is True
    assert again["skipped"] is True
    val_tokens = pack["splits"]["val"]["tokens"]
    assert ev["tokens"] == (val_tokens - 1) // 16 * 16  # every whole window of block_size 16
    assert ev["loss"] == pytest.approx(cli["loss"], rel=1e-4)  # another batch size, the same number
    assert not (aifs_dirs["runs"] / "week05" / "smoke" / "log" / "week05.md").exists()  # a stage writes no log
