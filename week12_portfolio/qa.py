"""The interview Q&A (docs/qa.md): parse it and resolve every citation against the repository.

The file's contract (what :func:`parse` reads and :func:`check` enforces):

    ## Week NN — topic                 a week section, NN = 01 .. 12
    ### Qn. The question?               a question; n runs 1, 2, ... in document order, without gaps
    - an answer bullet                  2 to 5 of them; a continuation line is indented
    - Evidence: LINK[, LINK ...]        one or more citation bullets, after the answer bullets

A LINK is a Markdown link whose target is a repository file, relative to the Q&A file's folder (``docs/``), never
leaving the repository. What it must name, by form:

    [label](path "quote")               the file contains the quote, an exact substring once runs of whitespace are
                                        collapsed (a title in '...' works too, for quotes holding a double quote)
    [label](path.py#name)               ``name`` is a ``def`` or ``class`` of that file, found with ``ast``;
                                        ``Class.method`` for a method; a ``test_*`` name must be a function
    [label](path.md#anchor)             ``anchor`` is the slug of one of the file's headings, the same on GitHub and
                                        in python-markdown's table of contents (the docs site): for a heading whose
                                        two slugs differ, cite a quote instead
    [label](path#fragment "quote")      both: the quote occurs inside that def/class, or inside that heading's section

A bare link (no quote, no fragment) is refused: it would prove only that a file exists.

Numbers: an answer must not state a measured result typed by hand. Every number in an answer bullet must occur in
at least one of the question's cited files (as a number: ``72`` does not match ``172`` or ``0.72``). Not numbers,
hence ignored: anything inside a code span (formulas go there: ``2 · n_layer · B · T · n_embd · bytes``), a number
glued to letters (``week05``, ``fp32``, ``NF4``, ``v0.1``, ``GPT-2``, ``ZeRO-3``, ``124M``), a week reference
(``week 5``, ``weeks 7-9``), a paper's year (``Hu et al. 2021``), link targets and the
:data:`FORMULA_CONSTANTS`.

``python -m week12_portfolio.qa [docs/qa.md]`` prints the summary and every problem (question, citation, reason) and
exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO_ROOT / "docs" / "qa.md"
# Formula constants written in prose: bytes per element of bf16 (2) and fp32 (4), as in "2·L·B·T·C·4 bytes".
# Anything else must be found in the cited evidence.
FORMULA_CONSTANTS = frozenset({"2", "4"})

WEEK_RE = re.compile(r"^## Week (\d{2}) — \S.*$")
QUESTION_RE = re.compile(r"^### Q(\d+)\. (\S.*)$")
BULLET_RE = re.compile(r"^- (.*)$")
EVIDENCE_PREFIX = "Evidence:"
LINK_RE = re.compile(r"""\[(?P<label>[^\]]+)\]\((?P<target>[^)\s]+)(?:\s+(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'))?\)""")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")
NOT_NUMBERS = [
    re.compile(r"`[^`]*`"),                                            # code spans: names and formulas
    re.compile(r"\]\([^)]*\)"),                                        # link targets
    re.compile(r"https?://\S+"),                                       # bare URLs
    re.compile(r"\bweeks?\s+\d+(?:\s*(?:[-–,]|and|to|or)\s*\d+)*", re.I),  # week references
    re.compile(r"et al\.,?\s+\d{4}"),                                  # a paper's year
]


@dataclass(frozen=True)
class Citation:
    """One evidence link: ``path`` relative to the Q&A file's folder, an optional ``fragment`` (a def/class name or a
    heading anchor) and an optional exact ``quote``; ``line`` is its 1-based line in the Q&A file."""

    label: str
    path: str
    fragment: str | None
    quote: str | None
    line: int

    def __str__(self) -> str:
        target = self.path + (f"#{self.fragment}" if self.fragment else "")
        return f"[{self.label}]({target}" + (f' "{self.quote}")' if self.quote is not None else ")")

    @property
    def kind(self) -> str:
        """``quote``, ``test``, ``symbol``, ``anchor`` (a fragment into another kind of file is ``fragment``)."""
        if self.fragment is None:
            return "quote"
        if self.path.endswith(".py"):
            return "test" if self.fragment.rsplit(".", 1)[-1].startswith("test_") else "symbol"
        return "anchor" if self.path.endswith(".md") else "fragment"


@dataclass
class Question:
    """One ``### Qn.`` entry: its ``week`` (1-12, 0 when outside a week section), the answer ``bullets`` (markup
    kept) and the ``citations`` of its Evidence bullets."""

    number: int
    week: int
    text: str
    line: int
    bullets: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)

    @property
    def qid(self) -> str:
        return f"Q{self.number}"


@dataclass(frozen=True)
class Problem:
    """What is wrong, where: ``where`` names the question (``Q7``) or the file, ``citation`` the link as written
    (empty for a structural problem)."""

    where: str
    citation: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.citation}: {self.reason}" if self.citation else f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class Rules:
    """The structure a Q&A file must have: ``expected`` questions (None: any number), at least ``min_per_week`` in
    each of ``weeks``, and ``min_bullets`` .. ``max_bullets`` answer bullets per question."""

    expected: int | None = 40
    weeks: tuple[int, ...] = tuple(range(1, 13))
    min_per_week: int = 2
    min_bullets: int = 2
    max_bullets: int = 5


@dataclass
class Report:
    """The outcome of :func:`check`: the parsed questions, every problem, and the counts."""

    path: Path
    questions: list[Question]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict:
        """``{"questions", "citations", "per_week": {week: n}, "kinds": {kind: n}}`` (weeks as ints)."""
        cites = [c for q in self.questions for c in q.citations]
        return {"questions": len(self.questions), "citations": len(cites),
                "per_week": dict(sorted(Counter(q.week for q in self.questions).items())),
                "kinds": dict(sorted(Counter(c.kind for c in cites).items()))}

    def describe(self) -> str:
        """One line of counts, e.g. ``40 questions, 75 citations (quote 50, test 15, ...); per week 01: 3, ...``."""
        s = self.summary()
        kinds = ", ".join(f"{k} {n}" for k, n in s["kinds"].items())
        weeks = ", ".join(f"{w:02d}: {n}" for w, n in s["per_week"].items())
        return f"{s['questions']} questions, {s['citations']} citations ({kinds}); per week {weeks}"


# ---------------------------------------------------------------------------------------------------- parsing


def parse(text: str, where: str = "qa.md") -> tuple[list[Question], list[Problem]]:
    """Split a Q&A file into questions; malformed lines inside a question are problems, not exceptions.

    Returns:
        the questions in document order and the structural problems met while reading (``where`` names the file in
        problems that belong to no question).
    """
    questions: list[Question] = []
    problems: list[Problem] = []
    week, current, bullets, in_fence = 0, None, [], False

    def close() -> None:
        if current is None:
            return
        seen_evidence = False
        for body, line in bullets:
            if body.startswith(EVIDENCE_PREFIX):
                seen_evidence = True
                current.citations.extend(_citations(body[len(EVIDENCE_PREFIX):], line, current, problems))
            elif seen_evidence:
                problems.append(Problem(current.qid, "", f"line {line}: an answer bullet after the Evidence bullets "
                                                         "(put the citations last)"))
            else:
                current.bullets.append(body)

    for lineno, raw in enumerate(text.splitlines(), 1):
        if FENCE_RE.match(raw):
            in_fence = not in_fence
            if in_fence and current is not None:
                problems.append(Problem(current.qid, "", f"line {lineno}: a code block inside an answer "
                                                         "(answers are bullets only)"))
            continue
        if in_fence:
            continue
        if raw.startswith("## "):
            close()
            current, bullets = None, []
            m = WEEK_RE.match(raw)
            if m:
                week = int(m.group(1))
            else:
                week = 0
                problems.append(Problem(where, "", f"line {lineno}: {raw!r} is not a week heading "
                                                   "'## Week NN — topic'"))
            continue
        if raw.startswith("### "):
            close()
            bullets = []
            m = QUESTION_RE.match(raw)
            if not m:
                current = None
                problems.append(Problem(where, "", f"line {lineno}: {raw!r} is not a question heading "
                                                   "'### Qn. question'"))
                continue
            current = Question(int(m.group(1)), week, m.group(2), lineno)
            questions.append(current)
            if week == 0:
                problems.append(Problem(current.qid, "", f"line {lineno}: the question is outside a "
                                                         "'## Week NN — topic' section"))
            continue
        if current is None or not raw.strip():
            continue
        m = BULLET_RE.match(raw)
        if m:
            bullets.append((m.group(1).strip(), lineno))
        elif raw.startswith("  ") and bullets:
            body, line = bullets[-1]
            bullets[-1] = (f"{body} {raw.strip()}", line)
        else:
            problems.append(Problem(current.qid, "", f"line {lineno}: text outside a bullet: {raw.strip()[:60]!r} "
                                                     "(answers are '- ' bullets; indent a continuation line)"))
    close()
    return questions, problems


def _citations(body: str, line: int, q: Question, problems: list[Problem]) -> list[Citation]:
    found = []
    for m in LINK_RE.finditer(body):
        target = m.group("target")
        path, _, fragment = target.partition("#")
        quote = m.group("dq") if m.group("dq") is not None else m.group("sq")
        found.append(Citation(m.group("label"), path, fragment or None, quote, line))
    rest = LINK_RE.sub("", body)
    if re.sub(r"[\s,;]|\band\b", "", rest):
        problems.append(Problem(q.qid, "", f"line {line}: text in an Evidence bullet that is not a citation link: "
                                           f"{rest.strip()[:60]!r} (a malformed link?)"))
    if not found:
        problems.append(Problem(q.qid, "", f"line {line}: an Evidence bullet without a link"))
    return found


# ---------------------------------------------------------------------------------------------------- resolving


def normalise_space(text: str) -> str:
    """Runs of whitespace (line breaks included) collapsed to one space, ends stripped."""
    return " ".join(text.split())


def _stamp(path: Path) -> tuple[Path, int, int]:
    """The cache key of a file: a file rewritten since (another size or mtime) is read again."""
    st = path.stat()
    return path, st.st_mtime_ns, st.st_size


def _read(path: Path) -> str:
    return _read_stamped(_stamp(path))


@cache
def _read_stamped(stamp: tuple[Path, int, int]) -> str:
    return stamp[0].read_text(encoding="utf-8")


def _symbols(path: Path) -> dict[str, ast.AST]:
    """Qualified name -> node of every def/class at module level and in classes (methods as ``Class.method``)."""
    return _symbols_stamped(_stamp(path))


@cache
def _symbols_stamped(stamp: tuple[Path, int, int]) -> dict[str, ast.AST]:
    path = stamp[0]
    tree = ast.parse(_read(path), filename=str(path))
    names: dict[str, ast.AST] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names[prefix + node.name] = node
                if isinstance(node, ast.ClassDef):
                    visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return names


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading text: lower case, every character but letters, digits, ``_``, ``-`` and spaces
    dropped, each space a hyphen (``"Week 04 — GPT"`` -> ``"week-04--gpt"``)."""
    text = re.sub(r"[^\w\- ]", "", _plain(heading).lower())
    return text.replace(" ", "-")


def toc_slug(heading: str) -> str:
    """python-markdown's ``toc`` anchor (the docs site): ASCII-folded, punctuation dropped, runs of spaces and hyphens
    one hyphen (``"Week 04 — GPT"`` -> ``"week-04-gpt"``)."""
    text = unicodedata.normalize("NFKD", _plain(heading)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _plain(heading: str) -> str:
    """A heading's text as rendered: link targets, emphasis and code markers removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[*`]", "", text)


def _headings(path: Path) -> list[tuple[int, int, str, str, str]]:
    """(line index, level, text, GitHub slug, toc slug) of every heading outside code blocks, duplicates suffixed
    the way each renderer does (``-1`` on GitHub, ``_1`` in python-markdown)."""
    return _headings_stamped(_stamp(path))


@cache
def _headings_stamped(stamp: tuple[Path, int, int]) -> list[tuple[int, int, str, str, str]]:
    path = stamp[0]
    out, in_fence, seen_gh, seen_toc = [], False, Counter(), Counter()
    for i, line in enumerate(_read(path).splitlines()):
        if FENCE_RE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING_RE.match(line)
        if not m:
            continue
        text = m.group(2)
        gh, toc = github_slug(text), toc_slug(text)
        gh_n, toc_n = seen_gh[gh], seen_toc[toc]
        seen_gh[gh] += 1
        seen_toc[toc] += 1
        out.append((i, len(m.group(1)), text, f"{gh}-{gh_n}" if gh_n else gh, f"{toc}_{toc_n}" if toc_n else toc))
    return out


def resolve(c: Citation, base: Path, root: Path) -> str | None:
    """Why the citation does not resolve, or None when it does.

    Args:
        c: the citation.
        base: the folder its path is relative to (the Q&A file's).
        root: the repository; a path resolving outside it is refused.
    """
    if re.match(r"^[a-z]+:", c.path) or c.path.startswith("/"):
        return "cite a repository file by a relative path, not a URL or an absolute path"
    if not c.path:
        return "no file path (an anchor into the Q&A file itself proves nothing)"
    path = (base / c.path).resolve()
    if not path.is_relative_to(root.resolve()):
        return f"{c.path} resolves outside the repository ({root})"
    if not path.is_file():
        return f"no such file: {c.path} (relative to {base})"
    if c.fragment is None and c.quote is None:
        return "a bare link proves only that the file exists: add a quote title or a #fragment"
    scope = _read(path)
    if c.fragment is not None:
        if path.suffix == ".py":
            found = _resolve_symbol(path, c.fragment)
        elif path.suffix == ".md":
            found = _resolve_anchor(path, c.fragment)
        else:
            return f"#{c.fragment}: a fragment works only into a .py (def/class) or .md (heading) file"
        if isinstance(found, str) and found.startswith("!"):
            return found[1:]
        scope = found
    if c.quote is not None:
        quote = normalise_space(c.quote)
        if not quote:
            return "an empty quote"
        if quote not in normalise_space(scope):
            inside = f" inside #{c.fragment}" if c.fragment else ""
            return f"quote not found{inside} in {c.path}: {c.quote!r}"
    return None


def _resolve_symbol(path: Path, name: str) -> str:
    """The source of def/class ``name`` in ``path``, or ``"!reason"``."""
    try:
        symbols = _symbols(path)
    except SyntaxError as e:
        return f"!{path.name} does not parse as Python (line {e.lineno}): cannot look up #{name}"
    node = symbols.get(name)
    if node is None and "." not in name:
        matches = [n for q, n in symbols.items() if q.rsplit(".", 1)[-1] == name]
        node = matches[0] if len(matches) == 1 else None
    if node is None:
        what = "test function" if name.rsplit(".", 1)[-1].startswith("test_") else "def or class"
        return f"!no {what} {name!r} in {path.name}"
    if name.rsplit(".", 1)[-1].startswith("test_") and isinstance(node, ast.ClassDef):
        return f"!{name!r} in {path.name} is a class, not a test function"
    lines = _read(path).splitlines()
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[start - 1:node.end_lineno])


def _resolve_anchor(path: Path, anchor: str) -> str:
    """The section under the heading whose slugs equal ``anchor``, or ``"!reason"``."""
    heads = _headings(path)
    for k, (i, level, text, gh, toc) in enumerate(heads):
        if anchor not in (gh, toc):
            continue
        if gh != toc:
            return (f"!#{anchor}: the heading {text!r} has the anchor #{gh} on GitHub but #{toc} on the docs site; "
                    "cite it by a quote instead")
        end = next((j for j, lv, *_ in heads[k + 1:] if lv <= level), None)
        return "\n".join(_read(path).splitlines()[i:end])
    near = ", ".join(f"#{gh}" for _, _, _, gh, toc in heads if gh == toc)[:300]
    return f"!no heading with the anchor #{anchor} in {path.name} (anchors there: {near or 'none'})"


# ---------------------------------------------------------------------------------------------------- numbers


def numbers_in(text: str) -> list[str]:
    """The numbers of an answer bullet that must be backed by evidence (see the module docstring for what is not
    a number), in order."""
    for pattern in NOT_NUMBERS:
        text = pattern.sub(" ", text)
    out = []
    for m in NUMBER_RE.finditer(text):
        before = text[m.start() - 1] if m.start() else ""
        before2 = text[m.start() - 2] if m.start() > 1 else ""
        after = text[m.end()] if m.end() < len(text) else ""
        if before.isalnum() or before == "_" or (before in "-−–." and before2.isalpha()):
            continue  # glued to a name: week05, fp32, GPT-2, v0.1
        if after.isalpha() or after == "_":
            continue  # 124M, 4C, 16Ψ: part of a name or a symbol
        if m.group() not in FORMULA_CONSTANTS:
            out.append(m.group())
    return out


def number_in_text(number: str, text: str) -> bool:
    """True when ``number`` occurs in ``text`` as a whole number (``72`` is not in ``172``, ``0.72`` or ``72.5``)."""
    return re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d]|[.,]\d)", text) is not None


def _number_problems(q: Question, base: Path) -> list[Problem]:
    texts = []
    for c in q.citations:
        path = (base / c.path).resolve()
        if c.path and path.is_file():
            texts.append(_read(path))
    problems = []
    for bullet in q.bullets:
        for number in dict.fromkeys(numbers_in(bullet)):
            if not any(number_in_text(number, t) for t in texts):
                files = ", ".join(dict.fromkeys(c.path for c in q.citations)) or "no cited file"
                problems.append(Problem(q.qid, "", f"the number {number} in the answer is in none of its cited files "
                                                   f"({files}): cite the file that measured it, or say which row "
                                                   "holds it instead of typing it"))
    return problems


# ---------------------------------------------------------------------------------------------------- structure


def _structure_problems(questions: list[Question], rules: Rules, where: str) -> list[Problem]:
    problems = []
    numbers = [q.number for q in questions]
    if rules.expected is not None and len(questions) != rules.expected:
        problems.append(Problem(where, "", f"{len(questions)} questions, expected {rules.expected}"))
    for n, count in Counter(numbers).items():
        if count > 1:
            problems.append(Problem(f"Q{n}", "", f"the number Q{n} is used {count} times"))
    for i, n in enumerate(numbers, 1):
        if n != i:
            problems.append(Problem(f"Q{n}", "", f"question {i} in document order is numbered Q{n}: number them "
                                                 f"1..{len(questions)} in order, without gaps"))
            break
    per_week = Counter(q.week for q in questions)
    for w in rules.weeks:
        if per_week[w] < rules.min_per_week:
            problems.append(Problem(f"week {w:02d}", "", f"{per_week[w]} question(s), at least "
                                                         f"{rules.min_per_week} needed"))
    weeks = [q.week for q in questions]
    if weeks != sorted(weeks):
        problems.append(Problem(where, "", "week sections out of order: Week 01 first, Week 12 last"))
    for q in questions:
        if q.week and q.week not in rules.weeks:
            problems.append(Problem(q.qid, "", f"week {q.week:02d} is not one of the weeks {rules.weeks[0]:02d}-"
                                               f"{rules.weeks[-1]:02d}"))
        if not q.citations:
            problems.append(Problem(q.qid, "", "no citation: add an '- Evidence: [label](path \"quote\")' bullet"))
        if not rules.min_bullets <= len(q.bullets) <= rules.max_bullets:
            problems.append(Problem(q.qid, "", f"{len(q.bullets)} answer bullets, expected {rules.min_bullets}-"
                                               f"{rules.max_bullets}"))
    return problems


def check(path: Path = DEFAULT_PATH, rules: Rules = Rules(), root: Path = REPO_ROOT) -> Report:
    """Parse the Q&A file at ``path`` and resolve everything: structure, citations, numbers.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Q&A file at {path}: pass the path of docs/qa.md")
    questions, problems = parse(_read(path.resolve()), where=path.name)
    base = path.resolve().parent
    problems += _structure_problems(questions, rules, path.name)
    for q in questions:
        for c in q.citations:
            reason = resolve(c, base, root)
            if reason:
                problems.append(Problem(q.qid, str(c), f"line {c.line}: {reason}"))
        problems += _number_problems(q, base)
    return Report(path, questions, problems)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: print the counts and every problem; exit 1 when there is any, 2 on a bad argument."""
    ap = argparse.ArgumentParser(prog="python -m week12_portfolio.qa", description=__doc__.split("\n")[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="the Q&A file (default: docs/qa.md)")
    ap.add_argument("--expected", type=int, default=Rules.expected, help="number of questions (0: any)")
    ap.add_argument("--min-per-week", type=int, default=Rules.min_per_week, help="questions each week 1-12 needs")
    args = ap.parse_args(argv)
    rules = Rules(expected=args.expected or None, min_per_week=args.min_per_week)
    try:
        report = check(Path(args.path), rules)
    except (FileNotFoundError, UnicodeDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report.path}: {report.describe()}")
    for p in report.problems:
        print(f"  {p}")
    print(f"{len(report.problems)} problem(s)" if report.problems else "every citation resolves")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
