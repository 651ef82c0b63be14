"""Week 7's data: the frozen eval set is the one the builder draws, covers ≥ 6 task types and shares nothing with
train; a changed eval file is refused by hash; the val split; the eval command refuses a MODEL that is not one."""

import dataclasses

import pytest

from shared.data.instruct import InstructionRecord
from shared.testing import mirror_has
from week07_sft import config
from week07_sft.data import EvalSetError, load_eval_set, load_week_data, split_val

needs_data = pytest.mark.skipif(not (mirror_has("alpaca/alpaca_5000.json") and mirror_has(
    "self_instruct/user_oriented_instructions.jsonl")), reason="needs the dataset mirror (AIFS_DATA_MIRROR)")


def test_a_changed_eval_set_is_refused_by_its_hash():
    cfg = config.load("cpu")
    bad = dataclasses.replace(cfg, eval_set=dataclasses.replace(cfg.eval_set, sha256="0" * 64))
    with pytest.raises(EvalSetError, match="pins 0000"):
        load_eval_set(bad)
    missing = dataclasses.replace(cfg, eval_set=dataclasses.replace(cfg.eval_set, path="data/nope.jsonl"))
    with pytest.raises(EvalSetError, match="is missing: run `python -m week07_sft.evalset --write`"):
        load_eval_set(missing)


def test_val_split_is_seeded_and_disjoint():
    recs = [InstructionRecord(f"i{k}", "", "o", "t", "open_qa", f"t:{k}") for k in range(20)]
    train, val = split_val(recs, 5, seed=1)
    assert len(val) == 5
    assert len(train) == 15
    assert not {r.id for r in train} & {r.id for r in val}
    assert split_val(recs, 5, seed=1) == (train, val)
    with pytest.raises(ValueError, match="leaves no training record"):
        split_val(recs, 20, seed=1)


@needs_data
def test_the_frozen_eval_set_is_what_the_builder_draws_and_is_clean():
    from week07_sft.evalset import constrained, draw

    cfg = config.load("cpu")
    items = load_eval_set(cfg)
    assert draw(cfg) == items
    data = load_week_data(cfg)
    assert data.overlap.n_removed == 0
    assert len({i.task_type for i in items}) >= cfg.eval_set.min_task_types
    assert len(items) == cfg.eval_set.size
    assert sum(constrained(i.instruction) for i in items) >= cfg.eval_set.min_constrained
    assert data.clean.removed > 0
    assert len(data.v2) < len(data.v1)


def test_the_eval_command_refuses_a_model_that_is_neither_a_name_nor_a_folder(tmp_path):
    from week07_sft import eval as harness

    with pytest.raises(ValueError, match="is not a model"):
        harness.main(["--profile", "smoke", str(tmp_path / "no-model")])
