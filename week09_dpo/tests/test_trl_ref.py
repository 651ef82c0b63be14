"""The hand-written DPO loss against TRL's ``DPOTrainer`` on a tiny Llama: same batch, same loss; same curves."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from shared.data.tokenizer import load_tokenizer
from shared.models.tiny import write_tiny_llama
from shared.tasks.dpo import AdapterOffReference, DPOTask, DPOTaskConfig, encode_pairs
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from week09_dpo.config import AdapterConfig
from week09_dpo.trl_ref import compare_batch, trl_train

TEXTS = ["### Instruction:\nSay hello politely.\n\n### Response:\n", "Hello, it is a pleasure to help you.",
         "What do you want?", "\n\nHuman: How do I pick a lock?\n\nAssistant:", " I'd rather not help with that.",
         " Sure, take a pin and push.", "Thank you kindly, here is the answer.", "Figure it out yourself."] * 5


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    id: str
    source: str = "t"


PAIRS = [Pair(TEXTS[0], TEXTS[1], TEXTS[2], "a"), Pair(TEXTS[3], TEXTS[4], TEXTS[5], "b"),
         Pair(TEXTS[0], TEXTS[6], TEXTS[7], "c"), Pair(TEXTS[3], TEXTS[4], TEXTS[7], "d")]
LORA = AdapterConfig(r=4, alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"])
OPTIM = OptimConfig(lr=1e-2, weight_decay=0.0, beta2=0.999)
SCHED = ScheduleConfig(warmup_steps=0, min_lr=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_llama(tmp_path_factory.mktemp("m") / "tiny", TEXTS, vocab_size=300)
    return folder, load_tokenizer(folder)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_the_hand_loss_equals_trl_on_the_same_batch(tiny, loss):
    folder, tok = tiny
    enc = encode_pairs(PAIRS, tok, 128)
    assert len(enc.examples) == 4
    dpo = DPOTaskConfig(loss=loss, beta=0.1)
    got = compare_batch(folder, tok, PAIRS, enc.examples, LORA, dpo, OPTIM, SCHED, LoopConfig(micro_batch=4))
    assert got.same_ids
    assert got.same_mask
    assert got.hand_loss != pytest.approx(math.log(2), abs=1e-4)  # non-zero adapters: a real comparison
    assert got.abs_diff < 1e-5, (got.hand_loss, got.trl_loss)


def test_trl_trains_the_same_curve_as_the_hand_task_on_the_same_batches(tiny, tmp_path):
    from shared.checkpoint import FileCheckpointer
    from shared.tracking import FileLogger
    from shared.train.loop import fit
    from shared.train.optim import build_optimizer
    from week09_dpo.runs import build_policy

    folder, tok = tiny
    enc = encode_pairs(PAIRS, tok, 128).examples
    loop = LoopConfig(max_steps=4, micro_batch=2, eval_every=100, log_every=1, print_every=0, device="cpu",
                      progress=False)
    dpo = DPOTaskConfig(beta=0.5)
    task = DPOTask(enc, enc, tok.pad_id, 0, AdapterOffReference(), dpo)
    model = build_policy(folder, LORA, __import__("torch").device("cpu"), loop.seed)
    logger = FileLogger(tmp_path, "t", 0, tensorboard=False)
    fit(model, task, build_optimizer(model, OPTIM), SCHED, loop, checkpointer=FileCheckpointer(tmp_path / "c"),
        logger=logger)
    logger.close()
    import pandas as pd

    rows = pd.read_csv(tmp_path / "metrics.csv")
    hand = rows[rows.phase == "train"].loss.tolist()
    by_id = {p.id: p for p in PAIRS}
    order = [by_id[enc[i].id] for s in range(3) for i in task.example_indices(s, 0, 1, 2)]
    trl = trl_train(folder, tok, order, LORA, dpo, OPTIM, SCHED, loop, schedule_steps=4, steps=3)
    assert trl.steps == 3
    assert [r["step"] for r in trl.rows] == [1, 2, 3]
    assert trl.rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    for h, t in zip(hand[:3], [r["loss"] for r in trl.rows], strict=True):
        assert abs(h - t) < 1e-4, (hand, trl.rows)
    assert hand[2] < hand[0]
