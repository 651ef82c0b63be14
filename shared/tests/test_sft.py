"""The SFT objective: labels mask the prompt and padding; the masked positions get zero gradient and the loss is the
hand-computed mean over response tokens; over-long examples are dropped and counted; batches are a pure function
of their index (every example once per epoch); a resumed SFT run equals an uninterrupted one exactly."""

import math
import random

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import FileCheckpointer
from shared.data.instruct import InstructionRecord
from shared.models.gpt import GPT, GPTConfig
from shared.tasks.lm import IGNORE_INDEX
from shared.tasks.sft import SFTTask, collate, encode_example, encode_records, sft_loss
from shared.testing import DEBUG_GPT
from shared.tracking import FileLogger
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.optim import build_optimizer


class CharTok:
    """One id per character (a..z, space = 26), EOS = 27, PAD = 28: lengths are easy to count by hand."""

    eos_id, pad_id = 27, 28

    def encode(self, text):
        return [26 if c == " " else ord(c) - 97 for c in text.lower() if c == " " or c.isalpha()]


def _examples(n, seed=0, vocab=DEBUG_GPT["vocab_size"]):
    g = random.Random(seed)
    out = []
    for i in range(n):
        p = [g.randrange(vocab - 1) for _ in range(g.randint(1, 3))]
        r = [g.randrange(vocab - 1) for _ in range(g.randint(1, 3))]
        out.append(encode_example(p, r, vocab - 1, f"ex{i}"))
    return out


def test_an_example_masks_its_prompt_and_ends_with_eos():
    e = encode_example([5, 6, 7], [1, 2], eos_id=9)
    assert e.input_ids == (5, 6, 7, 1, 2, 9)
    assert e.labels == (IGNORE_INDEX,) * 3 + (1, 2, 9)
    assert (e.prompt_len, e.response_len) == (3, 3)
    with pytest.raises(ValueError, match="empty response"):
        encode_example([1], [], eos_id=9, id="rec7")


def test_over_long_records_are_dropped_and_counted_never_cut():
    recs = [InstructionRecord("ab", "", "c" * k, "t", "open_qa", f"t:{k}") for k in (1, 5, 20, 0)]
    enc = encode_records(recs, CharTok(), "alpaca", 10_000)
    lengths = enc.lengths
    limit = lengths[1]  # the middle record fits exactly; the longest does not
    enc = encode_records(recs, CharTok(), "alpaca", limit)
    assert [e.id for e in enc.examples] == ["t:1", "t:5"]
    assert enc.dropped == [("t:20", lengths[2])]
    assert all(len(e.input_ids) <= limit for e in enc.examples)
    assert enc.empty == ["t:0"]  # an empty output: nothing to learn, dropped and counted


def test_collate_pads_right_with_mask_zero_and_label_minus_100():
    b = collate([encode_example([1], [2], 3), encode_example([1, 1, 1], [2, 2], 3)], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 0, 0, 0], [1, 1, 1, 2, 2, 3]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert b["labels"].tolist() == [[-100, 2, 3, -100, -100, -100], [-100] * 3 + [2, 2, 3]]


def test_masked_positions_get_zero_gradient_and_the_loss_is_the_response_only_mean():
    torch.manual_seed(0)
    b = collate(_examples(4), pad_id=0)
    logits = torch.randn(*b["input_ids"].shape, DEBUG_GPT["vocab_size"], requires_grad=True)
    loss = sft_loss(logits, b["labels"])
    terms = []
    for i in range(b["labels"].shape[0]):
        for t in range(b["labels"].shape[1] - 1):
            y = int(b["labels"][i, t + 1])
            if y != IGNORE_INDEX:
                terms.append(-F.log_softmax(logits[i, t], -1)[y])
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    loss.backward()
    carries = torch.zeros_like(b["labels"], dtype=torch.bool)
    carries[:, :-1] = b["labels"][:, 1:] != IGNORE_INDEX  # position t carries the loss of label t + 1
    assert (logits.grad[~carries] == 0).all()
    assert (logits.grad[carries].abs().sum(-1) > 0).all()


def test_batches_are_a_pure_function_of_the_index_and_cover_each_epoch_once():
    ex = _examples(10)
    task, again = SFTTask(ex, ex[:2], 0, seed=3), SFTTask(ex, ex[:2], 0, seed=3)
    first_epoch = [i for k in range(5) for i in task.example_indices(k, 0, 1, 2)]
    assert sorted(first_epoch) == list(range(10))
    assert torch.equal(task.batch(7, 0, 1, 2)["input_ids"], again.batch(7, 0, 1, 2)["input_ids"])
    # two ranks of 2 together hold one process's micro-batch of 4
    both = task.example_indices(3, 0, 2, 2) + task.example_indices(3, 1, 2, 2)
    assert both == task.example_indices(3, 0, 1, 4)
    with pytest.raises(ValueError, match="training and validation"):
        SFTTask([], ex, 0, 0)


def test_eval_loss_is_token_weighted_over_every_val_example():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT)).eval()
    ex = _examples(5)
    task = SFTTask(ex, ex, 0, 0, eval_batch=2, train_eval_examples=2)
    total = count = 0.0
    for e in ex:  # one at a time: no padding at all (no_grad: as the eval runs)
        b = collate([e], 0)
        n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        with torch.no_grad():
            total += float(sft_loss(model(b["input_ids"]), b["labels"])) * n
        count += n
    out = task.evaluate(model)
    assert out["val_loss"] == pytest.approx(total / count, rel=1e-5)  # padding and batching change nothing
    assert set(out) == {"val_loss", "train_loss"}


def _fit(run_dir, loop):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**DEBUG_GPT))
    ex = _examples(40)
    task = SFTTask(ex[:32], ex[32:], pad_id=0, seed=loop.seed, eval_batch=4)
    logger = FileLogger(run_dir, "test", 0, tensorboard=False)
    result = fit(model, task, build_optimizer(model, OptimConfig(lr=1e-2)), ScheduleConfig(warmup_steps=2), loop,
                 checkpointer=FileCheckpointer(run_dir / "checkpoints"), logger=logger)
    logger.close()
    rows = pd.read_csv(run_dir / "metrics.csv")
    return model, result, rows[rows.phase == "train"]


def test_the_sft_task_learns_and_resumes_exactly(tmp_path):
    loop = dict(max_steps=16, micro_batch=4, eval_every=4, log_every=1, print_every=0, device="cpu", progress=False)
    full_model, full, m_full = _fit(tmp_path / "full", LoopConfig(**loop))
    assert full.evals[-1]["val_loss"] < full.evals[0]["val_loss"]
    assert math.isfinite(full.evals[-1]["train_loss"])
    _fit(tmp_path / "cut", LoopConfig(**loop, stop_at=7))
    model, resumed, m_cut = _fit(tmp_path / "cut", LoopConfig(**loop))
    assert resumed.resumed_from == 7
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    assert m_cut.loss.tolist() == m_full.loss.tolist()
    for (k, a), b in zip(full_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # the tokens counted are the real ones (no padding)
    assert full.tokens == sum(int(SFTTask(_examples(40)[:32], _examples(40)[32:], 0, 1337).batch(i, 0, 1, 4)
                                  ["attention_mask"].sum()) for i in range(16))
