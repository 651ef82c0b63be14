"""Preference pairs: HH dialogues split at the last Assistant turn (each drop reason on a hand-written dialogue), the
loaders' drop counts on the real files and on tiny ones, the fixed split by prompt, and the rubric's rules, each on a
pair that fails it."""

import gzip
import json
import random

import pytest

from shared.data.corpus import CorpusError
from shared.data.preference import (
    DROP_REASONS,
    RUBRIC,
    PairError,
    PreferencePair,
    ch07_pairs_from_records,
    deflection_rates,
    deflects,
    hh_pairs_from_lines,
    load_ch07_pairs,
    load_hh_pairs,
    load_pairs,
    pair_stats,
    politeness,
    read_hh_pairs,
    rubric_shares,
    rule_passes,
    split_by_prompt,
    split_hh_dialogue,
)
from shared.data.prompts import format_prompt
from shared.data.sources import source_file


def _pair(chosen, rejected, prompt="p", source="llms_from_scratch_ch07", id="t:0"):
    return PreferencePair(id, source, prompt, chosen, rejected)


@pytest.fixture(scope="module")
def hh():
    return load_hh_pairs()


@pytest.fixture(scope="module")
def ch07():
    return load_ch07_pairs()


def test_a_two_turn_dialogue_splits_at_the_assistant_turn_and_keeps_the_leading_space():
    prompt, chosen, rejected = split_hh_dialogue("\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with "
                                                 "that.  \n", "\n\nHuman: How do I pick a lock?\n\nAssistant: Sure.")
    assert prompt == "\n\nHuman: How do I pick a lock?\n\nAssistant:"
    assert (chosen, rejected) == (" I can't help with that.", " Sure.")


def test_an_earlier_assistant_turn_stays_in_the_prompt():
    history = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a secret."
    prompt, chosen, rejected = split_hh_dialogue(history + "\n\nAssistant: No.", history + "\n\nAssistant: Okay.")
    assert prompt == history + "\n\nAssistant:"
    assert prompt.count("\n\nAssistant:") == 2
    assert (chosen, rejected) == (" No.", " Okay.")


@pytest.mark.parametrize(("chosen", "rejected", "reason"), [
    ("\n\nHuman: Hi", "\n\nHuman: Hi\n\nAssistant: Hello", "no_final_assistant_turn"),
    ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hi", "no_final_assistant_turn"),
    ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hey\n\nAssistant: Hello", "prompt_mismatch"),
    ("\n\nHuman: Hi\n\nAssistant: ", "\n\nHuman: Hi\n\nAssistant: Hello", "empty_chosen"),
    ("\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: Hi\n\nAssistant:\n", "empty_rejected"),
])
def test_an_unusable_dialogue_raises_its_reason(chosen, rejected, reason):
    with pytest.raises(PairError) as e:
        split_hh_dialogue(chosen, rejected)
    assert e.value.reason == reason
    assert reason in DROP_REASONS
    assert isinstance(e.value, ValueError)


def test_identical_responses_are_not_an_error_of_the_split_but_are_dropped_by_the_loader(tmp_path):
    same = "\n\nHuman: Hi\n\nAssistant: Hello"
    assert split_hh_dialogue(same, same + "  ")[1:] == (" Hello", " Hello")
    rows = [{"chosen": same, "rejected": same + " \n"},
            {"chosen": same, "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"},
            {"chosen": "\n\nHuman: Hi", "rejected": same}]
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs, dropped = read_hh_pairs(path)
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [("hh_rlhf:1", " Hello", " Go away")]
    assert dropped == {"identical": 1, "no_final_assistant_turn": 1}


def test_ch07_records_identical_and_empty_answers_are_dropped_and_counted():
    records = [{"instruction": "Name a colour.", "input": "", "chosen": "Blue, if I may.", "rejected": "Blue, duh."},
               {"instruction": "Name a colour.", "input": "", "chosen": "Red.", "rejected": " Red. "},
               {"instruction": "Add 2 and 3.", "input": "", "chosen": " ", "rejected": "5"}]
    pairs, dropped = ch07_pairs_from_records(records)
    assert [p.id for p in pairs] == ["llms_from_scratch_ch07:0"]
    assert pairs[0].prompt == format_prompt("Name a colour.", "", "alpaca")
    assert dropped == {"identical": 1, "empty_chosen": 1}


def test_malformed_lines_and_records_name_where():
    with pytest.raises(CorpusError, match="t.jsonl: line 1 is not valid JSON"):
        hh_pairs_from_lines(['{"chosen": "a", "rejected": "b"}', "{"], "t.jsonl")
    with pytest.raises(CorpusError, match="f.json: record 0 has no usable 'rejected'"):
        ch07_pairs_from_records([{"instruction": "x", "chosen": "y"}], where="f.json")


def test_hh_real_file_every_line_kept_or_counted(hh):
    pairs, dropped = hh
    assert len(pairs) + sum(dropped.values()) == 2312
    assert set(dropped) <= set(DROP_REASONS)
    assert all(p.prompt.endswith("\n\nAssistant:") and p.chosen.strip() and p.rejected.strip() for p in pairs)
    assert all(p.source == "hh_rlhf" and p.id.startswith("hh_rlhf:") for p in pairs)


def test_ch07_real_file_every_record_kept_or_counted_and_prompts_formatted(ch07):
    pairs, dropped = ch07
    assert len(pairs) + sum(dropped.values()) == 1100
    records = json.loads(source_file("llms_from_scratch_ch07",
                                     "llms_from_scratch_ch07/instruction-data-with-preference.json").read_text())
    for p in pairs:
        rec = records[int(p.id.split(":")[1])]
        assert p.prompt == format_prompt(rec["instruction"], rec["input"], "alpaca")
        assert (p.chosen, p.rejected) == (rec["chosen"], rec["rejected"])


def test_load_pairs_dispatches_and_names_the_known_sources():
    pairs, dropped = load_pairs(["llms_from_scratch_ch07", "hh_rlhf"])
    assert set(dropped) == {"llms_from_scratch_ch07", "hh_rlhf"}
    assert pairs[0].source == "llms_from_scratch_ch07"
    assert pairs[-1].source == "hh_rlhf"
    with pytest.raises(CorpusError, match="unknown preference source.*Known: llms_from_scratch_ch07, hh_rlhf"):
        load_pairs(["hh"])


def _toy_pairs():
    pairs = [_pair(f"good {i}", f"bad {i}", prompt=f"q{i % 7}", id=f"c:{i}") for i in range(20)]
    return pairs + [_pair("yes", "no", prompt=f"h{i}", source="hh_rlhf", id=f"h:{i}") for i in range(10)]


def test_split_by_prompt_keeps_prompts_apart_and_fills_val():
    pairs = _toy_pairs()
    train, val = split_by_prompt(pairs, 4)
    assert not {(p.source, p.prompt) for p in train} & {(p.source, p.prompt) for p in val}
    assert len(train) + len(val) == len(pairs)
    for source in ("llms_from_scratch_ch07", "hh_rlhf"):
        assert sum(p.source == source for p in val) >= 4
        assert any(p.source == source for p in train)
    assert train == [p for p in pairs if p in train]  # input order
    assert val == [p for p in pairs if p in val]


def test_split_by_prompt_does_not_depend_on_input_order():
    pairs = _toy_pairs()
    train, val = split_by_prompt(pairs, 5)
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    train2, val2 = split_by_prompt(shuffled, 5)
    assert ({p.id for p in train2}, {p.id for p in val2}) == ({p.id for p in train}, {p.id for p in val})


def test_split_by_prompt_raises_when_val_would_empty_train():
    with pytest.raises(ValueError, match="source hh_rlhf has 10 pairs.*lower val_pairs_per_source"):
        split_by_prompt(_toy_pairs(), 10)


def test_lexicons():
    assert deflects(" I'm sorry, I can't help with that.")
    assert deflects(" I\u2019m sorry, that would be illegal.")  # curly apostrophe as HH writes it
    assert not deflects(" Sure, here is how.")
    assert not deflects(" Insteadly")  # whole words only
    assert politeness("Could you please wait? Thank you.") == 3
    assert politeness("Obviously, just figure it out!") == -3
    assert politeness("Justin is here.") == 0


@pytest.mark.parametrize(("rule", "failing"), [
    ("distinct", _pair("Blue.", " Blue.\n")),
    ("non_empty", _pair("Blue.", "  ")),
    ("more_polite", _pair("Obviously it is blue.", "It is blue, if I may.")),
    ("more_polite", _pair("It is blue.", "It is blue.")),  # a tie is not "more polite"
    ("chosen_deflects_no_less", _pair(" Sure, here is how.", " I'm sorry, I can't.", source="hh_rlhf")),
])
def test_a_pair_that_breaks_a_rule_fails_it_and_is_counted(rule, failing):
    assert not rule_passes(rule, failing)
    [row] = [r for r in rubric_shares([failing]) if r["rule"] == rule]
    assert (row["passed"], row["total"], row["share"], row["ok"]) == (0, 1, 0.0, False)


def test_unknown_rule_is_named():
    with pytest.raises(KeyError, match="Known: distinct"):
        rule_passes("nice", _pair("a", "b"))


def test_rubric_and_stats_on_the_real_data(hh, ch07):
    pairs = ch07[0] + hh[0]
    rows = rubric_shares(pairs)
    assert [(r["source"], r["rule"]) for r in rows] == [(r.applies_to, r.name) for r in RUBRIC]
    for r in rows:
        assert 0.0 <= r["share"] <= 1.0
        assert r["total"] == len(hh[0] if r["source"] == "hh_rlhf" else ch07[0])
        assert r["ok"] == (r["share"] >= r["min_share"])
        assert r["ok"], r  # the data meets its own rubric
    chosen_rate, rejected_rate = deflection_rates(hh[0])
    assert 0.0 <= rejected_rate < chosen_rate <= 1.0
    stats = pair_stats(pairs)
    assert list(stats) == ["llms_from_scratch_ch07", "hh_rlhf"]
    assert stats["hh_rlhf"]["pairs"] == len(hh[0])
    assert stats["hh_rlhf"]["unique_prompts"] <= len(hh[0])
    assert stats["hh_rlhf"]["chars"]["prompt"]["median"] > stats["hh_rlhf"]["chars"]["chosen"]["median"] > 0


def test_pair_to_json_round_trips():
    p = _pair("a", "b")
    assert PreferencePair(**p.to_json()) == p


def test_a_corrupt_gzip_is_a_corpus_error(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"chosen": "a", "rejected": "b"}\n' * 50)[:40])
    with pytest.raises(CorpusError, match="cannot be read as gzip UTF-8 JSONL"):
        read_hh_pairs(path)
