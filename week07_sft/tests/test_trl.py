"""The hand-written SFT loss against TRL's SFTTrainer (completion-only loss) on one fixed batch of a tiny Llama:
the same ids, the same masked positions, both losses within 2e-5 (relative) of the exact fp64 value (where one token
more in the mask is far away); and the matched SFTConfig."""

import pytest
import torch

from shared.data.instruct import InstructionRecord, task_type
from shared.models.tiny import write_tiny_llama
from shared.tasks.sft import SFTTaskConfig
from shared.train.config import LoopConfig, OptimConfig, ScheduleConfig

RECORDS = [InstructionRecord(i, x, o, "t", task_type(i, x), f"t:{k}") for k, (i, x, o) in enumerate([
    ("Name a primary colour.", "", "Red."), ("Add the numbers.", "2 and 3", "2 + 3 = 5."),
    ("Translate to French.", "Good morning", "Bonjour."), ("List two fruits.", "", "1. Apple\n2. Pear"),
    ("Rewrite in passive voice.", "The cat ate the fish.", "The fish was eaten by the cat.")])]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    texts = [f"{r.instruction} {r.input} {r.output}" for r in RECORDS] * 4
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "base", texts, vocab_size=400, hidden_size=32)


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_project_loss_equals_trl_on_a_fixed_batch(base, template):
    from week07_sft.trl_ref import compare_batch

    cmp = compare_batch(base, RECORDS, SFTTaskConfig(template=template, max_length=256), OptimConfig(lr=1e-4),
                        ScheduleConfig(warmup_steps=0), LoopConfig(micro_batch=4, max_steps=1, device="cpu"))
    assert cmp.examples == 4
    assert cmp.same_ids
    assert cmp.same_mask
    assert abs(cmp.project_rel_err) <= 2e-5, (cmp.project_loss, cmp.exact_loss)
    assert abs(cmp.trl_rel_err) <= 2e-5, (cmp.trl_loss, cmp.exact_loss)


def test_the_fp64_bound_catches_a_one_token_difference_in_the_mask(base):
    """The failing input of the check: masking one response token more moves the exact loss far past 2e-5."""
    from shared.data.tokenizer import load_tokenizer
    from shared.tasks.sft import collate, encode_records
    from week07_sft.trl_ref import _hf_model, exact_loss

    tok = load_tokenizer(base)
    batch = collate(encode_records(RECORDS, tok, "alpaca", 256).examples[:4],
                    tok.pad_id if tok.pad_id is not None else tok.eos_id)
    model = _hf_model(base).double().eval()
    labels = batch["labels"].clone()
    row, col = (labels[:, 1:] != -100).nonzero()[0].tolist()
    labels[row, col + 1] = -100
    with torch.no_grad():
        full, one_less = exact_loss(model, batch), exact_loss(model, {**batch, "labels": labels})
    assert abs(one_less - full) / full > 1e-4


def test_the_sft_config_carries_the_projects_hyper_parameters(tmp_path):
    from week07_sft.trl_ref import sft_config

    c = sft_config(str(tmp_path), OptimConfig(lr=3e-5, beta2=0.95, weight_decay=0.0),
                   ScheduleConfig(warmup_steps=3), LoopConfig(micro_batch=2, grad_accum_steps=2, max_steps=7,
                                                             grad_clip=0.5, device="cpu"), 128)
    assert (c.learning_rate, c.adam_beta2, c.warmup_steps, c.max_steps, c.max_grad_norm) == (3e-5, 0.95, 3, 7, 0.5)
    assert (c.per_device_train_batch_size, c.gradient_accumulation_steps, c.max_length) == (2, 2, 128)
    assert c.completion_only_loss
    assert not c.gradient_checkpointing
    assert not c.packing
