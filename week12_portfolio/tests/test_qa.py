"""docs/qa.md resolves, and each kind of broken Q&A is caught and named (fixtures in fixtures/qa/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from week12_portfolio import qa

FIXTURES = Path(__file__).parent / "fixtures" / "qa"
REAL = qa.REPO_ROOT / "docs" / "qa.md"
# a failure fixture: Q1 resolves, Q2 carries the fault
TWO = qa.Rules(expected=2, weeks=(1,), min_per_week=1)


@pytest.mark.usefixtures("whole_repository")
def test_the_real_qa_resolves_with_no_problems():
    report = qa.check(REAL)
    assert report.problems == [], "\n".join(map(str, report.problems))
    summary = report.summary()
    assert summary["questions"] == 40
    assert [q.number for q in report.questions] == list(range(1, 41))
    assert set(summary["per_week"]) == set(range(1, 13))
    assert all(summary["per_week"][w] >= 3 for w in range(1, 12))
    assert summary["per_week"][12] >= 2
    assert all(q.citations for q in report.questions)
    assert summary["citations"] >= 2 * 40
    assert {"quote", "test", "symbol", "anchor"} <= set(summary["kinds"])


def test_the_fixture_with_every_citation_form_resolves():
    report = qa.check(FIXTURES / "good.md", qa.Rules(expected=3, weeks=(1, 2), min_per_week=1))
    assert report.problems == [], "\n".join(map(str, report.problems))
    kinds = [c.kind for q in report.questions for c in q.citations]
    assert kinds.count("anchor") == 1
    assert kinds.count("test") == 1
    assert kinds.count("symbol") == 3
    q2 = report.questions[1]
    assert q2.week == 1
    assert len(q2.bullets) == 2
    assert q2.bullets[0].endswith("not numbers.")
    assert q2.citations[1].quote == "return 2 * 4"
    assert q2.citations[1].fragment == "Cache.nbytes"


@pytest.mark.parametrize(("fixture", "reason"), [
    ("missing_file.md", "no such file: evidence/nope.md"),
    ("missing_quote.md", "quote not found in evidence/log.md: 'loss increases over steps'"),
    ("missing_test.md", "no test function 'test_loss_goes_up' in sample_checks.py"),
    ("bad_anchor.md", "no heading with the anchor #memory-per-gpu in log.md"),
    ("anchor_differs.md", "#week-04--a-gpt on GitHub but #week-04-a-gpt on the docs site"),
    ("quote_outside_symbol.md", "quote not found inside #Cache"),
    ("bare_link.md", "a bare link proves only that the file exists"),
    ("no_citation.md", "no citation"),
    ("typed_number.md", "the number 73 in the answer is in none of its cited files (evidence/log.md)"),
])
def test_each_broken_citation_is_one_problem_naming_its_question(fixture, reason):
    report = qa.check(FIXTURES / fixture, TWO)
    assert len(report.problems) == 1, "\n".join(map(str, report.problems))
    problem = report.problems[0]
    assert problem.where == "Q2"
    assert reason in problem.reason
    assert str(problem).startswith("Q2: ")


def test_a_gap_in_the_numbering_is_named():
    report = qa.check(FIXTURES / "numbering_gap.md", TWO)
    assert [str(p) for p in report.problems] == [
        "Q3: question 2 in document order is numbered Q3: number them 1..2 in order, without gaps"]


def test_the_count_and_the_weeks_are_enforced():
    report = qa.check(FIXTURES / "good.md", qa.Rules(expected=40, weeks=(1, 2, 3), min_per_week=2))
    assert sorted(map(str, report.problems)) == [
        "good.md: 3 questions, expected 40",
        "week 02: 1 question(s), at least 2 needed",
        "week 03: 0 question(s), at least 2 needed",
    ]


def test_answer_bullet_counts_and_layout_are_enforced():
    text = ("## Week 01 — w\n\n### Q1. Too short?\n\n- One bullet only.\n- Evidence: [a](a.md \"b\")\n\n"
            "### Q2. Loose text?\n\nA paragraph.\n- One.\n- Evidence: [a](a.md \"b\")\n- Two, after the evidence.\n")
    questions, problems = qa.parse(text)
    reasons = [str(p) for p in problems]
    assert "Q2: line 10: text outside a bullet: 'A paragraph.' (answers are '- ' bullets; indent a continuation " \
           "line)" in reasons
    assert "Q2: line 13: an answer bullet after the Evidence bullets (put the citations last)" in reasons
    structure = qa._structure_problems(questions, qa.Rules(expected=2, weeks=(1,), min_per_week=1), "t.md")
    assert [str(p) for p in structure] == ["Q1: 1 answer bullets, expected 2-5", "Q2: 1 answer bullets, expected 2-5"]


def test_a_code_block_in_an_answer_and_a_week_out_of_range_are_named_once():
    text = ("## Week 13 — w\n\n### Q1. Code?\n\n- a\n\n```python\n### Q2. not a question\nx = 1\n```\n\n- b\n"
            "- Evidence: [a](a.md \"b\")\n")
    questions, problems = qa.parse(text)
    assert [str(p) for p in problems] == ["Q1: line 7: a code block inside an answer (answers are bullets only)"]
    assert [q.bullets for q in questions] == [["a", "b"]]
    structure = qa._structure_problems(questions, qa.Rules(expected=1, weeks=(1, 2), min_per_week=0), "t.md")
    assert [str(p) for p in structure] == ["Q1: week 13 is not one of the weeks 01-02"]


def test_headings_and_evidence_that_do_not_follow_the_format_are_named():
    text = ("### Q1. Before any week?\n\n- a\n- b\n- Evidence: [a](a.md \"b\")\n\n## Notes\n\n"
            "## Week 02 — w\n\n### Question two\n\n### Q2. Malformed evidence?\n\n- a\n- b\n"
            "- Evidence: [a](a.md \"b\"), see also [c](c.md \"d\"\n- Evidence: nothing here\n")
    questions, problems = qa.parse(text)
    reasons = [str(p) for p in problems]
    assert "Q1: line 1: the question is outside a '## Week NN — topic' section" in reasons
    assert "qa.md: line 7: '## Notes' is not a week heading '## Week NN — topic'" in reasons
    assert "qa.md: line 11: '### Question two' is not a question heading '### Qn. question'" in reasons
    assert any(r.startswith("Q2: line 17: text in an Evidence bullet that is not a citation link") for r in reasons)
    assert "Q2: line 18: an Evidence bullet without a link" in reasons
    assert [c.path for c in questions[1].citations] == ["a.md"]


def test_a_path_outside_the_repository_a_url_and_a_fragment_into_other_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("some notes\n")
    base = tmp_path / "docs"
    base.mkdir()
    (tmp_path.parent / "outside.md").write_text("secret\n")
    cite = lambda path, fragment=None, quote="x": qa.Citation("l", path, fragment, quote, 1)  # noqa: E731
    assert "resolves outside the repository" in qa.resolve(cite("../../outside.md", quote="secret"), base, tmp_path)
    assert "not a URL" in qa.resolve(cite("https://example.org/a.md"), base, tmp_path)
    assert "fragment works only into a .py" in qa.resolve(cite("../notes.txt", "top", None), base, tmp_path)
    assert qa.resolve(cite("../notes.txt", quote="some  notes"), base, tmp_path) is None


def test_symbols_are_found_with_ast_not_text(tmp_path):
    (tmp_path / "m.py").write_text('"""def test_in_a_docstring(): not a function."""\n\n\nclass test_klass:\n'
                                   '    def method(self):\n        pass\n\n\ndef broken(:\n')
    cite = lambda frag: qa.Citation("l", "m.py", frag, None, 1)  # noqa: E731
    assert "does not parse as Python" in qa.resolve(cite("test_klass"), tmp_path, tmp_path)
    (tmp_path / "m.py").write_text('"""def test_in_a_docstring(): not a function."""\n\n\nclass test_klass:\n'
                                   '    def method(self):\n        pass\n')
    assert "no test function 'test_in_a_docstring'" in qa.resolve(cite("test_in_a_docstring"), tmp_path, tmp_path)
    assert "is a class, not a test function" in qa.resolve(cite("test_klass"), tmp_path, tmp_path)
    assert qa.resolve(cite("test_klass.method"), tmp_path, tmp_path) is None
    assert qa.resolve(cite("method"), tmp_path, tmp_path) is None  # a unique method name is enough
    assert "no def or class 'klass'" in qa.resolve(cite("klass"), tmp_path, tmp_path)


def test_numbers_that_are_names_formulas_weeks_or_years_are_not_counted():
    assert qa.numbers_in("week05 fp32 NF4 v0.1 GPT-2 ZeRO-3 124M k−1 `2 · 72 bytes` week 5, weeks 7–9, weeks 8 and "
                         "9 (Hu et al. 2021, https://arxiv.org/abs/2106.09685) [x](../a/b1.md) 2 and 4") == []
    assert qa.numbers_in("within 5% and 1e-5; 1,100 pairs; 0.127 bits; ±1e4; 10× the lr; step 750.") == [
        "5", "1e-5", "1,100", "0.127", "1e4", "10", "750"]


def test_a_number_matches_only_as_a_whole_number():
    assert qa.number_in_text("72", "holds 72 KiB")
    assert qa.number_in_text("72", "(72%)")
    assert not any(qa.number_in_text("72", t) for t in ("172 KiB", "0.72", "72.5", "1,072", "720"))
    assert qa.number_in_text("1e-5", "agree to 1e-5 (fp32)")


def test_heading_slugs_follow_github_and_python_markdown():
    assert qa.github_slug("Week 04 — a GPT") == "week-04--a-gpt"
    assert qa.toc_slug("Week 04 — a GPT") == "week-04-a-gpt"
    assert qa.github_slug("The CPU trap (bitsandbytes 0.50.2)") == "the-cpu-trap-bitsandbytes-0502"
    assert qa.toc_slug("The CPU trap (bitsandbytes 0.50.2)") == "the-cpu-trap-bitsandbytes-0502"
    assert qa.github_slug("2-3. `Softmax` regression: [loop](x.md)") == "2-3-softmax-regression-loop"


@pytest.mark.usefixtures("whole_repository")
def test_the_command_line_prints_counts_and_problems_and_sets_the_exit_code(capsys):
    assert qa.main([str(REAL)]) == 0
    out = capsys.readouterr().out
    assert "40 questions" in out
    assert "every citation resolves" in out
    assert qa.main([str(FIXTURES / "missing_quote.md"), "--expected", "2", "--min-per-week", "0"]) == 1
    out = capsys.readouterr().out
    assert "Q2: [log](evidence/log.md \"loss increases over steps\"): line 15: quote not found" in out
    assert out.rstrip().endswith("1 problem(s)")
    assert qa.main([str(FIXTURES / "nothing_here.md")]) == 2
    assert "no Q&A file at" in capsys.readouterr().err
