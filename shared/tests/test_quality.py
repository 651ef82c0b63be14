"""Each Gopher-style quality rule on a document that passes and one that fails; the pipeline blames the first rule."""

import pytest

from shared.data.quality import RULES, QualityConfig, apply_filters, check

GOOD = ("The cat sat on the mat and looked at the garden.\nIt was a quiet day with nothing to do.\n"
        "Later the dog came home to eat.")
FAILING = {
    "word_count": "Too short.",
    "mean_word_length": "a b c d e f g h i j k to the and of",
    "symbol_ratio": "# the # and # to # of # that # with # be #",
    "bullet_lines": "• the first item\n• and the second\n• to the third\n• of the fourth",
    "ellipsis_lines": "the cat sat and...\nthe dog ran to...\nit was with the...\nand then that",
    "alpha_words": "the 1 2 3 4 5 6 7 8 9 10 11 12 13 and 14",
    "stop_words": "Quick brown foxes jump over lazy dogs daily.",
    "duplicate_lines": "the same line and\nthe same line and\nthe same line and\nthe other one to",
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_passes_a_good_document_and_fails_its_bad_one(rule):
    cfg = QualityConfig()
    assert check(GOOD, rule, cfg)[0], rule
    ok, value = check(FAILING[rule], rule, cfg)
    assert not ok, (rule, value)


def test_measured_values():
    cfg = QualityConfig()
    assert check("a bb ccc", "mean_word_length", cfg)[1] == pytest.approx(2.0)
    assert check(FAILING["duplicate_lines"], "duplicate_lines", cfg)[1] == pytest.approx(0.5)
    assert check(FAILING["stop_words"], "stop_words", cfg)[1] == 0


def test_apply_filters_blames_the_first_failing_rule_and_keeps_the_rest():
    docs = [GOOD, FAILING["word_count"], FAILING["stop_words"], GOOD + "\nOne more line with the end."]
    res = apply_filters(docs, QualityConfig())
    assert res.kept == [0, 3]
    assert [i for i, _ in res.removed["word_count"]] == [1]
    assert [i for i, _ in res.removed["stop_words"]] == [2]
    assert sum(len(v) for v in res.removed.values()) + len(res.kept) == len(docs)
    assert "words" in res.criterion("word_count", QualityConfig())


def test_an_unknown_rule_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown quality rule 'length'. Known: word_count"):
        apply_filters([GOOD], QualityConfig(rules=["length"]))
