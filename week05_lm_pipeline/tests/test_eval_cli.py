"""The eval CLI (``python -m week05_lm_pipeline.eval``) on wrong input: every case ends in ``error: ...`` naming the
bad thing and the fix, exit status 2, no traceback — a classifier checkpoint (week 1), a GPT checkpoint without a
tokenizer or a val file (week 4), bad option values, an unknown device, too few tokens."""

import numpy as np
import pytest
import torch

from shared.checkpoint import FileCheckpointer
from shared.cli import run_week
from shared.data.pack import TokenFileMeta, write_token_file
from shared.data.text import CharTokenizer
from shared.models import SoftmaxRegression
from shared.models.gpt import GPT, GPTConfig
from week05_lm_pipeline.eval import main as eval_main

TEXT = "to be or not to be, that is the question. " * 20


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch):
    monkeypatch.delenv("AIFS_TRACEBACK", raising=False)


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = run_week(lambda: eval_main(list(args)))
    return code, capsys.readouterr().err


@pytest.fixture
def gpt_ckpt(tmp_path):
    """A week-5-like GPT checkpoint with its char tokenizer and a packed val file, and a week-4-like one (no tokenizer
    path, no val file recorded: week 4 keeps its tokenizer beside the checkpoints)."""
    tok = CharTokenizer.from_text(TEXT)
    tok_path = tmp_path / "tokenizer.json"
    tok.save(tok_path)
    ids = np.asarray(tok.encode(TEXT), dtype=np.uint16)
    val = write_token_file(tmp_path / "val.bin", ids, TokenFileMeta(len(ids), 1, "uint16", tok.vocab_size,
                                                                    tok.sha256, 0, 0))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    week5 = FileCheckpointer(tmp_path / "w5" / "checkpoints", meta={
        "tokenizer": str(tok_path), "tokenizer_sha256": tok.sha256, "val_data": str(val)}).save(1, model, best=True)
    week4 = FileCheckpointer(tmp_path / "w4" / "checkpoints", meta={"tokenizer_sha256": tok.sha256}).save(1, model)
    (tmp_path / "w4" / "tokenizer.json").write_text(tok_path.read_text())
    return {"week5": week5, "week4": week4, "tokenizer": tok_path, "val": val}


def test_a_good_checkpoint_evaluates(gpt_ckpt, capsys):
    code, _ = _cli(capsys, str(gpt_ckpt["week5"]), "--batch-size", "3", "--device", "cpu")
    assert code == 0


def test_a_classifier_checkpoint_is_refused_by_name(tmp_path, capsys):
    week1 = FileCheckpointer(tmp_path / "checkpoints", meta={"run_id": "week01/smoke/baseline-seed0-x"}).save(
        3, SoftmaxRegression())
    code, err = _cli(capsys, str(week1))
    assert code == 2
    assert err.startswith(f"error: {week1} holds a SoftmaxRegression (run week01/smoke/baseline-seed0-x), not a GPT "
                          "language model: evaluate a GPT checkpoint folder instead")
    assert "Traceback" not in err


def test_a_week4_checkpoint_names_the_missing_tokenizer_then_the_missing_val_file(gpt_ckpt, capsys):
    code, err = _cli(capsys, str(gpt_ckpt["week4"]))
    assert code == 2
    assert "records no tokenizer path: pass the tokenizer it was trained with (its run folder holds" in err
    code, err = _cli(capsys, str(gpt_ckpt["week4"]), "--tokenizer", str(gpt_ckpt["tokenizer"]))
    assert code == 2
    assert "records no val file (it was not trained by week 5's pipeline): pass --data" in err
    code, _ = _cli(capsys, str(gpt_ckpt["week4"]), "--tokenizer", str(gpt_ckpt["tokenizer"]), "--data",
                   str(gpt_ckpt["val"]))
    assert code == 0


def test_a_run_folder_instead_of_a_checkpoint_suggests_the_checkpoint(gpt_ckpt, capsys):
    code, err = _cli(capsys, str(gpt_ckpt["week5"].parent.parent))
    assert code == 2
    assert "a run folder is not a checkpoint: did you mean" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "argument --batch-size: 0 is not >= 1"),
    (["--batch-size", "two"], "argument --batch-size: 'two' is not a whole number"),
    (["--max-tokens", "-1"], "argument --max-tokens: -1 is not >= 0"),
])
def test_bad_option_values_are_usage_errors(gpt_ckpt, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        eval_main([str(gpt_ckpt["week5"]), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"week05_lm_pipeline.eval: error: {message} " + (
        "(windows per forward pass)" if "batch" in message else "(0 = every token)")


def test_an_unknown_device_and_too_few_tokens_are_explained(gpt_ckpt, capsys):
    code, err = _cli(capsys, str(gpt_ckpt["week5"]), "--device", "gpu0")
    assert code == 2
    assert err.startswith("error: device='gpu0' is not a device name. Fix: use auto, cpu, cuda or cuda:N")
    code, err = _cli(capsys, str(gpt_ckpt["week5"]), "--max-tokens", "10", "--device", "cpu")
    assert code == 2
    assert err.startswith("error: the eval stream cut at max_tokens=10 has 10 tokens, too few for model.block_size=16")
    assert "Fix: raise max_tokens to at least 17, or set it to 0 (every token)" in err
