"""The eval harness: the instruction-following constraints, each score on a passing and a failing answer, left
padding changes no greedy answer (GPT and Hugging Face paths), the harness gives the same numbers twice and copes
with an empty generation, and the table keeps one row per (model, eval set, harness)."""

import csv

import pytest
import torch

from shared.evals.generate import Generation, greedy_generate, left_pad
from shared.evals.harness import run_harness
from shared.evals.instruct import (
    EvalItem,
    HarnessConfig,
    asked_count,
    instruction_checks,
    item_count,
    list_items,
    normalise_answer,
    read_items,
    score_answer,
    summarise,
    write_items,
    write_table_row,
)
from shared.models.gpt import GPT, GPTConfig
from shared.testing import DEBUG_GPT

ITEM = EvalItem("x:0", "List three fruits.", "", "1. Apple\n2. Pear\n3. Plum", "brainstorming", "x")
CFG = HarnessConfig(max_new_tokens=8)


def test_constraints_read_off_the_instruction():
    assert asked_count("Give me five ideas for a party.") == 5
    assert asked_count("List 10 animals") == 10
    assert asked_count("Explain gravity.") is None
    assert list_items("1. a\n2) b\n- c\n* d\nnot an item") == 4
    assert instruction_checks("Answer yes or no: is water wet?", "Yes, it is.") == {"yes_no": True}
    assert instruction_checks("Answer yes or no: is water wet?", "Maybe.") == {"yes_no": False}
    assert instruction_checks("Describe it in one sentence.", "It is red. It is big.") == {"one_sentence": False}
    assert instruction_checks("Describe it in 5 words or fewer", "a small red ball") == {"word_limit": True}
    assert instruction_checks("Return the data as JSON.", '```json\n{"a": 1}\n```') == {"json": True}
    assert instruction_checks("Return the data as JSON.", "a: 1") == {"json": False}
    assert instruction_checks("Why is the sky blue?", "Rayleigh scattering.") == {}


def test_list_table_and_count_checks_read_the_answer_form():
    # a count the answer cannot be held to is not a constraint: "the two players", "$3", a number in a name
    assert asked_count("Provide the names of the two players in the game.") is None
    assert asked_count("If her parents give her $3 more, how much has she?") is None
    assert asked_count("Write a description for a 925 sterling silver chain.") is None
    assert item_count("1- San Diego\n2- Manchester") == 2
    assert item_count("The planets are: Mercury, Venus, Earth, and Mars.") == 4
    assert item_count("It rains a lot, which is why the grass, unlike the trees, stays green all year long.") == 1
    assert instruction_checks("Give me a list of 3 colours.", "red, green, blue") == {"count": True}
    assert instruction_checks("Give me a list of 3 colours.", "red, green") == {"count": False}
    assert instruction_checks("Make a list of popular podcasts.", "Serial\nRadiolab\nThis American Life") == {
        "list": True}
    assert instruction_checks("Make a list of popular podcasts.", "Serial is popular.") == {"list": False}
    assert instruction_checks("Create a table of planets and sizes.", "Planet | Size\nMars | 6792 km") == {
        "table": True}
    assert instruction_checks("Create a table of planets and sizes.", "Mars is 6792 km wide.") == {"table": False}
    # a table the prompt gives is not one it asks for; code answers are not held to list or JSON form
    assert instruction_checks("Add up the prices in the following table.", "42") == {}
    assert instruction_checks("Write a Python script that saves a dict as JSON with 3 keys.", "import json") == {}


def test_each_score_on_a_passing_and_a_failing_answer():
    good = score_answer(ITEM, "1. Apple\n2. Pear\n3. Plum", True, "alpaca", CFG)
    assert good["compliant"]
    assert good["rougeL"] == pytest.approx(1.0)
    assert good["followed"] is True
    truncated = score_answer(ITEM, "1. Apple\n2. Pear", False, "alpaca", CFG)
    assert not truncated["compliant"]
    assert truncated["followed"] is False
    assert truncated["rougeL"] < 1
    echo = score_answer(ITEM, "### Instruction:\nList three fruits.", True, "alpaca", CFG)
    assert echo["ended"]
    assert not echo["no_echo"]
    assert not echo["compliant"]
    empty = score_answer(ITEM, "", True, "alpaca", CFG)
    assert (empty["nonempty"], empty["compliant"], empty["rougeL"]) == (False, False, 0.0)
    short = EvalItem("x:1", "Is 7 prime?", "", "Yes.", "classification", "x")
    assert score_answer(short, "yes\nbecause...", True, "alpaca", CFG)["exact"] is True
    assert score_answer(short, "No.", True, "alpaca", CFG)["exact"] is False
    assert score_answer(ITEM, "x", True, "alpaca", CFG)["exact"] is None  # a long reference: no exact match
    assert normalise_answer("  The END!! ") == "the end"
    s = summarise([good, truncated, echo, empty])
    assert (s["format_compliance"], s["following_items"], s["exact_items"]) == (0.25, 4, 0)
    assert s["exact_match"] is None


def test_left_padding_changes_no_greedy_answer_of_the_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**DEBUG_GPT, "block_size": 32})).eval()
    prompts = [[1, 2, 3, 4, 5], [6], [2, 2]]
    alone = [greedy_generate(model, [p], eos_id=7, pad_id=0, max_new_tokens=6)[0] for p in prompts]
    batched = greedy_generate(model, prompts, eos_id=7, pad_id=0, max_new_tokens=6, batch_size=3)
    assert batched == alone
    ids, mask = left_pad(prompts, 0)
    assert ids.tolist()[1] == [0, 0, 0, 0, 6]
    assert mask.tolist()[1] == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[]], 0)


def test_a_window_of_learned_positions_is_never_passed():
    from shared.evals.generate import fit_window

    ids, mask = left_pad([[1, 2, 3], [4]], 0)
    assert fit_window(ids, mask, 5, None)[2] == 5
    assert fit_window(ids, mask, 5, 16)[2] == 5
    assert fit_window(ids, mask, 5, 6)[2] == 3  # 3 prompt positions + 3 new = the window
    long = torch.ones(1, 10, dtype=torch.long)
    cut, cut_mask, new = fit_window(long, long, 4, 8)
    assert cut.shape == (1, 7)
    assert new == 1


def _tiny_hf(tmp_path):
    from shared.models.causal_lm import HFCausalLM
    from shared.models.loading import load_any_lm
    from shared.models.tiny import write_tiny_llama

    folder = write_tiny_llama(tmp_path / "tiny", ["list three fruits apple pear plum"] * 20, vocab_size=300)
    lm = load_any_lm(folder)
    assert isinstance(lm.model, HFCausalLM)
    assert lm.kind == "hf_dir"
    return lm


def test_hf_generation_matches_one_prompt_at_a_time_and_the_harness_repeats_itself(tmp_path):
    lm = _tiny_hf(tmp_path)
    prompts = [lm.tokenizer.encode(t) for t in ("list three", "apple", "pear plum apple pear")]
    eos, pad = lm.tokenizer.eos_id, lm.tokenizer.pad_id
    alone = [greedy_generate(lm.model, [p], eos_id=eos, pad_id=pad, max_new_tokens=5)[0] for p in prompts]
    assert greedy_generate(lm.model, prompts, eos_id=eos, pad_id=pad, max_new_tokens=5, batch_size=3) == alone
    items = [ITEM, EvalItem("x:1", "Name a fruit.", "", "Apple.", "brainstorming", "x")]
    a = run_harness(lm.model, lm.tokenizer, items, "alpaca", CFG)
    b = run_harness(lm.model, lm.tokenizer, items, "chat", CFG)
    again = run_harness(lm.model, lm.tokenizer, items, "alpaca", CFG)
    assert a.rows == again.rows
    assert a.summary == again.summary
    assert len(b.rows) == 2


def test_an_empty_generation_is_scored_not_crashed(tmp_path):
    lm = _tiny_hf(tmp_path)

    class EOSFirst(torch.nn.Module):  # a model that ends every answer at once
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            logits = torch.zeros(*input_ids.shape, len(lm.tokenizer.hf))
            logits[..., lm.tokenizer.eos_id] = 1.0
            return logits

    model = EOSFirst(lm.model).eval()
    res = run_harness(model, lm.tokenizer, [ITEM], "alpaca", CFG)
    assert res.rows[0]["answer"] == ""
    assert res.rows[0]["ended"]
    assert not res.rows[0]["compliant"]
    assert greedy_generate(model, [[1, 2]], eos_id=lm.tokenizer.eos_id, pad_id=0, max_new_tokens=3) == [
        Generation((), True)]


def test_unknown_model_spec_is_a_clear_error(tmp_path):
    from shared.models.loading import load_any_lm

    with pytest.raises(ValueError, match="is not a model: give a registered name"):
        load_any_lm(tmp_path / "nothing-here")


def test_the_table_keeps_one_row_per_model_eval_set_and_harness(tmp_path):
    path = tmp_path / "harness.csv"
    write_table_row(path, {"model": "base", "eval_set": "e", "harness": "h", "rougeL": 0.1})
    write_table_row(path, {"model": "sft", "eval_set": "e", "harness": "h", "rougeL": 0.2})
    write_table_row(path, {"model": "base", "eval_set": "e", "harness": "h", "rougeL": 0.3})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["rougeL"]) for r in rows] == [("sft", "0.2"), ("base", "0.3")]


def test_eval_items_round_trip_and_a_bad_line_is_named(tmp_path):
    path = write_items(tmp_path / "e.jsonl", [ITEM])
    assert read_items(path) == [ITEM]
    path.write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="line 1 lacks instruction"):
        read_items(path)


def test_a_pinned_eval_set_is_read_by_path_and_a_missing_or_changed_file_is_a_clear_error(tmp_path):
    import hashlib
    import json

    from shared.evals.instruct import EvalSetError, read_pinned_items

    path = tmp_path / "eval.jsonl"
    rows = [{"id": f"x:{i}", "instruction": "Say hi.", "input": "", "reference": "Hi.", "task_type": "open_qa",
             "source": "x"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    items, got = read_pinned_items(path, digest, limit=2, config_file="configs/weekNN.yaml")
    assert got == digest
    assert [i.id for i in items] == ["x:0", "x:1"]
    with pytest.raises(EvalSetError, match="pin its new hash in configs/weekNN.yaml"):
        read_pinned_items(path, "0" * 64, config_file="configs/weekNN.yaml")
    with pytest.raises(EvalSetError, match="missing"):
        read_pinned_items(tmp_path / "nope.jsonl", digest)
