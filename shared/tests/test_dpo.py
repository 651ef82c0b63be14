"""The hand-written DPO objective: masking, the loss at initialisation, the frozen reference, IPO on a fixed batch,
bad pairs, and exact resume on the shared loop (TRL's loss on the same batch is checked in week 9's tests)."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import FileCheckpointer
from shared.models.causal_lm import HFCausalLM
from shared.nn.lora import LoRAConfig, adapters_disabled, inject_lora, lora_layers
from shared.tasks.dpo import (
    AdapterOffReference,
    DPOTask,
    DPOTaskConfig,
    FrozenReference,
    PairExample,
    PreferenceDataError,
    collate_pairs,
    dpo_loss,
    encode_pairs,
    initial_loss,
    ipo_loss,
    preference_loss,
    sequence_logps,
)
from shared.tracking import FileLogger
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig
from shared.train.loop import fit
from shared.train.optim import build_optimizer

V = 64


def tiny(seed: int = 0) -> HFCausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return HFCausalLM(LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2,
                                                   num_key_value_heads=2)))


def pairs(n: int, seed: int = 0) -> list[PairExample]:
    g = random.Random(seed)
    out = []
    for i in range(n):
        x = tuple(g.randrange(1, V - 1) for _ in range(g.randint(2, 5)))
        yw = tuple(g.randrange(1, V - 1) for _ in range(g.randint(1, 4))) + (V - 1,)
        yl = tuple(g.randrange(1, V - 1) for _ in range(g.randint(1, 4))) + (V - 1,)
        out.append(PairExample(x, yw, yl, f"p{i}", "a" if i % 2 else "b"))
    return out


def test_collate_puts_chosen_rows_first_and_masks_only_the_responses():
    p = [PairExample((1, 2), (3, 9), (4, 5, 9)), PairExample((6,), (7, 9), (8, 9))]
    b = collate_pairs(p, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 9, 0], [6, 7, 9, 0, 0], [1, 2, 4, 5, 9], [6, 8, 9, 0, 0]]
    assert b["completion_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_sequence_logps_sum_the_response_tokens_only_and_padding_changes_nothing():
    model = tiny().eval()
    p = pairs(6)
    alone = []
    with torch.no_grad():
        for e in p:
            b = collate_pairs([e], 0)
            logits = model(b["input_ids"], attention_mask=b["attention_mask"])
            lp = logits[:, :-1].log_softmax(-1).gather(-1, b["input_ids"][:, 1:, None])[..., 0]
            n = len(e.prompt_ids)
            manual = torch.stack([lp[0, n - 1:n - 1 + len(e.chosen_ids)].sum(),
                                  lp[1, n - 1:n - 1 + len(e.rejected_ids)].sum()])
            got = sequence_logps(logits, b["input_ids"], b["completion_mask"])
            torch.testing.assert_close(got, manual)
            alone.append(got)
        b = collate_pairs(p, 0)
        batched = sequence_logps(model(b["input_ids"], attention_mask=b["attention_mask"]), b["input_ids"],
                                 b["completion_mask"])
    want = torch.cat([torch.stack([a[0] for a in alone]), torch.stack([a[1] for a in alone])])
    torch.testing.assert_close(batched, want, atol=1e-5, rtol=0)  # fp32: only the padding's reduction order differs
    # changing a prompt token's *logit row* (not its id) cannot change the result: only response positions count
    logits = torch.randn(2, 5, V)
    ids = torch.randint(0, V, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
    bumped = logits.clone()
    bumped[:, 0] += 5.0  # position 0 predicts token 1, a prompt token
    bumped[0, 4] += 5.0  # the last position predicts nothing
    torch.testing.assert_close(sequence_logps(bumped, ids, mask), sequence_logps(logits, ids, mask))


def test_dpo_loss_is_log_2_at_initialisation_and_matches_the_formula():
    pw, pl, rw, rl = torch.tensor([-3.0, -7.0]), torch.tensor([-4.0, -2.0]), torch.tensor([-3.5, -6.0]), \
        torch.tensor([-3.0, -2.5])
    beta = 0.1
    want = torch.tensor([-math.log(1 / (1 + math.exp(-beta * ((pw[i] - rw[i]) - (pl[i] - rl[i])).item())))
                         for i in range(2)])
    torch.testing.assert_close(dpo_loss(pw, pl, rw, rl, beta), want)
    torch.testing.assert_close(dpo_loss(pw, pl, pw, pl, beta), torch.full((2,), math.log(2)))
    assert initial_loss("sigmoid", beta) == math.log(2)


def test_ipo_loss_on_a_fixed_batch():
    pw, pl, rw, rl = torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-3.5]), torch.tensor([-3.0])
    nw, nl, beta = torch.tensor([2.0]), torch.tensor([4.0]), 0.5
    # (0.5 / 2 - (-1) / 4 - 1 / (2 x 0.5))^2 = (0.25 + 0.25 - 1)^2 = 0.25
    torch.testing.assert_close(ipo_loss(pw, pl, rw, rl, beta, nw, nl), torch.tensor([0.25]))
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    torch.testing.assert_close(preference_loss("ipo", torch.cat([pw, pl]), torch.cat([rw, rl]), beta, mask),
                               torch.tensor([0.25]))
    assert initial_loss("ipo", beta) == 1.0
    with pytest.raises(ValueError, match="unknown preference loss"):
        preference_loss("kto", torch.cat([pw, pl]), torch.cat([rw, rl]), beta, mask)


@pytest.mark.parametrize("kind", ["frozen", "adapter_off"])
def test_the_task_starts_at_log_2_and_the_reference_gets_no_gradient(kind):
    policy = tiny()
    if kind == "frozen":
        ref = FrozenReference(copy.deepcopy(policy))
        before = {k: v.clone() for k, v in ref.model.state_dict().items()}
    else:
        inject_lora(policy, LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
        ref = AdapterOffReference()
        before = {k: v.clone() for k, v in policy.state_dict().items() if "lora_" not in k}
    task = DPOTask(pairs(16), pairs(4, 1), 0, 0, ref, DPOTaskConfig(beta=0.1))
    loss, metrics = task.loss(policy, task.batch(0, 0, 1, 4))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # policy = reference
    assert metrics["margin"].item() == pytest.approx(0.0, abs=1e-5)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for i in range(3):
        loss, _ = task.loss(policy, task.batch(i, 0, 1, 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if kind == "frozen":
        assert all(p.grad is None and not p.requires_grad for p in ref.model.parameters())
        after = ref.model.state_dict()
    else:
        assert all(p.grad is None for n, p in policy.named_parameters() if "lora_" not in n)
        after = {k: v for k, v in policy.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical reference weights
    assert task.loss(policy, task.batch(0, 0, 1, 4))[0].item() != pytest.approx(math.log(2), abs=1e-4)


def test_adapters_off_is_the_base_model_and_restores_the_adapters():
    base = tiny().eval()
    policy = copy.deepcopy(base)
    inject_lora(policy, LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    for m in lora_layers(policy).values():
        torch.nn.init.normal_(m.lora_B)
    ids = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        with adapters_disabled(policy):
            torch.testing.assert_close(policy(ids), base(ids), atol=0, rtol=0)
        assert not torch.allclose(policy(ids), base(ids))


def test_a_reference_with_another_vocabulary_is_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    other = HFCausalLM(LlamaForCausalLM(LlamaConfig(vocab_size=V + 8, hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=1, num_attention_heads=2)))
    task = DPOTask(pairs(4), pairs(2, 1), 0, 0, FrozenReference(other), DPOTaskConfig())
    with pytest.raises(PreferenceDataError, match="vocabulary"):
        task.loss(tiny(), task.batch(0, 0, 1, 2))
    with pytest.raises(PreferenceDataError, match="no LoRA adapter"):
        DPOTask(pairs(4), pairs(2, 1), 0, 0, AdapterOffReference(), DPOTaskConfig()).loss(tiny(), task.batch(0, 0, 1, 2))


@dataclass
class P:
    prompt: str
    chosen: str
    rejected: str
    id: str
    source: str = "t"


class CharTok:
    """One id per letter (a = 1 ... z = 26), EOS = 30."""

    eos_id, pad_id = 30, 0

    def encode(self, text):
        return [ord(c) - 96 for c in text.lower() if c.isalpha()]


def test_bad_pairs_are_dropped_and_counted_never_truncated():
    got = encode_pairs([P("ab", "cd", "ef", "ok"), P("ab", "", "ef", "e1"), P("ab", "cd", "!!", "e2"),
                        P("ab", "cd", "cd", "same"), P("abcdefghij", "x", "y", "longprompt"),
                        P("ab", "cdefghi", "x", "long")], CharTok(), max_length=8)
    assert [e.id for e in got.examples] == ["ok"]
    assert got.examples[0].chosen_ids == (3, 4, 30)
    assert {k: v for k, v in got.dropped.items() if v} == {"empty_chosen": ["e1"], "empty_rejected": ["e2"],
                                                           "identical": ["same"], "prompt_too_long": ["longprompt"],
                                                           "too_long": ["long"]}
    edge = encode_pairs([P("ab", "cdefg", "x", "fits")], CharTok(), max_length=8)  # 2 + 5 + EOS = 8 fits
    assert len(edge.examples) == 1

    class NoEOS(CharTok):
        eos_id = None

    with pytest.raises(PreferenceDataError, match="eos_id"):
        encode_pairs([P("a", "b", "c", "x")], NoEOS(), 8)
    with pytest.raises(PreferenceDataError, match="training and validation"):
        DPOTask([], pairs(2), 0, 0, FrozenReference(tiny()), DPOTaskConfig())


def test_eval_scores_are_per_pair_and_the_kl_is_zero_at_the_reference():
    policy = tiny().eval()
    inject_lora(policy, LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    task = DPOTask(pairs(8), pairs(6, 1), 0, 0, AdapterOffReference(), DPOTaskConfig(eval_batch=4))
    out = task.evaluate(policy)
    assert out["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert out["kl"] == pytest.approx(0.0, abs=1e-7)
    assert out["reward_accuracy"] == 0.0  # ties are not preferences
    for m in lora_layers(policy).values():
        torch.nn.init.normal_(m.lora_B, std=0.5)
    s = task.scores(policy)
    assert len(s.ids) == 6
    assert s.ids == [e.id for e in task.val]
    assert all(k > 0 for k in s.kl_sum)
    out = task.evaluate(policy)
    assert out["kl"] > 0
    margins = s.margins(0.1)
    assert out["reward_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 6)
    losses = [-F.logsigmoid(torch.tensor(m)).item() for m in margins]
    assert out["val_loss"] == pytest.approx(sum(losses) / 6, rel=1e-6)


def _fit(run_dir, loop, sft_weight=0.0):
    policy = tiny()
    inject_lora(policy, LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    task = DPOTask(pairs(24), pairs(6, 1), 0, loop.seed, AdapterOffReference(),
                   DPOTaskConfig(beta=0.5, sft_weight=sft_weight, eval_batch=3))
    logger = FileLogger(run_dir, "test", 0, tensorboard=False)
    result = fit(policy, task, build_optimizer(policy, OptimConfig(lr=3e-2)), ScheduleConfig(warmup_steps=1), loop,
                 checkpointer=FileCheckpointer(run_dir / "checkpoints"), logger=logger)
    logger.close()
    rows = pd.read_csv(run_dir / "metrics.csv")
    return policy, result, rows[rows.phase == "train"]


def test_the_dpo_task_learns_and_resumes_exactly(tmp_path):
    loop = dict(max_steps=10, micro_batch=4, eval_every=5, log_every=1, print_every=0, device="cpu", progress=False)
    full_model, full, m_full = _fit(tmp_path / "full", LoopConfig(**loop))
    assert full.evals[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert m_full.loss.iloc[-3:].mean() < math.log(2) - 0.05  # the training pairs are learned
    assert m_full.margin.iloc[-1] > 0
    _fit(tmp_path / "cut", LoopConfig(**loop, stop_at=4))
    model, resumed, m_cut = _fit(tmp_path / "cut", LoopConfig(**loop))
    assert resumed.resumed_from == 4
    assert m_cut.loss.tolist() == m_full.loss.tolist()
    assert [e["val_loss"] for e in resumed.evals] == [e["val_loss"] for e in full.evals]
    for (k, a), b in zip(full_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_the_sft_term_adds_the_chosen_nll():
    policy = tiny()
    inject_lora(policy, LoRAConfig(r=4, alpha=8, target_modules=["q_proj"]))
    b = collate_pairs(pairs(4), 0)
    plain = DPOTask(pairs(4), pairs(2), 0, 0, AdapterOffReference(), DPOTaskConfig())
    with_sft = DPOTask(pairs(4), pairs(2), 0, 0, AdapterOffReference(), DPOTaskConfig(sft_weight=2.0))
    with torch.no_grad():
        logits = policy(b["input_ids"], attention_mask=b["attention_mask"])[:4]
        labels = b["input_ids"][:4].masked_fill(b["completion_mask"][:4] == 0, -100)
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
        got = with_sft.loss(policy, b)[0] - plain.loss(policy, b)[0]
    assert got.item() == pytest.approx(2.0 * nll.item(), rel=1e-5)
