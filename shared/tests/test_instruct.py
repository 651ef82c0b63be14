"""Instruction records: the schema, the loaders' errors (file and record index named), Self-Instruct's instances,
the task-type rules; version 2's cleaning rules, each on a record it keeps and one it removes."""

import json

import pytest

from shared.data.corpus import CorpusError
from shared.data.instruct import TASK_TYPES, InstructionRecord, read_records, record_stats, task_type
from shared.data.instruct_clean import CleanConfig, clean_records, fix_format, is_placeholder, needs_unseen


def _rec(instruction, output, input="", id="t:0"):
    return InstructionRecord(instruction, input, output, "t", task_type(instruction, input), id)


def test_json_and_jsonl_records_and_self_instruct_instances(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}]))
    (tmp_path / "s.jsonl").write_text(json.dumps({"instruction": "Rewrite it.", "instances": [
        {"input": "a", "output": "b"}, {"input": "c", "output": "d"}]}) + "\n")
    [a] = read_records(tmp_path / "a.json", "alpaca")
    assert (a.output, a.task_type, a.id) == ("5", "math", "alpaca:0")
    s = read_records(tmp_path / "s.jsonl", "self_instruct")
    assert [(r.input, r.output, r.id) for r in s] == [("a", "b", "self_instruct:0.0"), ("c", "d", "self_instruct:0.1")]


@pytest.mark.parametrize(("bad", "what"), [({"input": "", "output": "x"}, "instruction"),
                                       ({"instruction": "x", "output": 3}, "output")])
def test_a_record_without_instruction_or_output_names_the_file_and_index(tmp_path, bad, what):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "ok", "output": "ok"}, bad]))
    with pytest.raises(CorpusError, match=rf"bad.json: record 1 has no usable '{what}'"):
        read_records(path, "t")


def test_task_type_rules():
    cases = {"Calculate 12 * 4.": "math", "Classify the sentiment of this review.": "classification",
             "Extract the dates from the text.": "extraction", "Summarize the article.": "summarization",
             "Rewrite the sentence in passive voice.": "rewriting", "List three fruits.": "brainstorming",
             "Write a haiku about rain.": "creative_writing", "Why is the sky blue?": "open_qa"}
    for instruction, want in cases.items():
        assert task_type(instruction) == want, instruction
    assert set(cases.values()) == set(TASK_TYPES)


def test_record_stats():
    s = record_stats([_rec("a", "b"), _rec("c", "", "x")], lengths=[3, 9])
    assert (s["records"], s["with_input"], s["empty_output"], s["tokens"]["max"]) == (2, 1, 1, 9)


def test_each_cleaning_rule_keeps_a_good_record_and_removes_a_bad_one():
    good = _rec("Name a colour of the sky on a clear day.", "Blue.", id="t:0")
    assert not is_placeholder(good.output)
    assert is_placeholder(" <nooutput> ")
    assert not needs_unseen(good)
    assert needs_unseen(_rec("Describe the image below.", "A cat."))
    assert needs_unseen(_rec("Tell me a joke.", "As an AI language model, I cannot tell jokes."))
    assert needs_unseen(_rec("Summarise https://example.com", "It is about cats."))
    assert needs_unseen(_rec("Name a good site.", "See www.example.com for more."))
    assert not needs_unseen(_rec("Suggest ways to stay connected.", "Use video chat and share photos."))
    fixed = fix_format(_rec("  Say hi.\\n ", "Hi\n\n\n\nthere", input="<noinput>"))
    assert (fixed.instruction, fixed.input, fixed.output) == ("Say hi.", "", "Hi\n\nthere")
    long_words = " ".join(["word"] * 50)
    recs = [good, _rec("Say hi.", "<nooutput>", id="t:1"), _rec("Describe the photo.", "A dog.", id="t:2"),
            _rec("Name a colour of the sky on a clear day!", "blue", id="t:3"),
            _rec("Explain the water cycle to a child in simple words please", "Water goes up as vapour, makes clouds, "
                 "and comes down as rain again and again", id="t:4"),
            _rec("Explain the water cycle to a child in simple words please", "Water goes up as vapour, makes clouds, "
                 "and comes down as rain again and again today", id="t:5"),
            _rec("Tell a story.", long_words, id="t:6")]
    cfg = CleanConfig(max_words=40)
    cfg.dedup.shingle_size = 2
    res = clean_records(recs, cfg)
    removed = {s.name: s.removed for s in res.steps}
    assert removed == {"format": 0, "empty_output": 1, "unseen_reference": 1, "exact_duplicate": 1,
                       "near_duplicate": 1, "too_long": 1}
    assert [r.id for r in res.records] == ["t:0", "t:4"]
    assert {s.name: [e["id"] for e in s.examples] for s in res.steps}["exact_duplicate"] == ["t:3"]
    with pytest.raises(ValueError, match="removed all"):
        clean_records([_rec("x", "")], cfg)
