"""The link walker: what it reads, what it skips, which links it calls broken, on a fixture and on the repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from week12_portfolio import links
from week12_portfolio.links import (
    REPO,
    BrokenLink,
    RepoIndex,
    check_links,
    extract_links,
    github_slug,
    heading_anchors,
    unlinked_artefacts,
)

FIXTURE = Path(__file__).parent / "fixtures" / "links"


def _line_of(text: str, target: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if target in line)


def test_fixture_has_exactly_the_expected_broken_links():
    readme = (FIXTURE / "README.md").read_text()
    expected = {
        ("docs/missing.md", "no such file or folder"),
        ("docs/guide.md#no-such-heading", "docs/guide.md has no heading with anchor #no-such-heading"),
        ("img/nope.png", "no such file or folder"),
        ("tool.py#L99", "line 99 is past the end of tool.py (3 lines)"),
        ("docs/gone.md", "no such file or folder"),  # an HTML href
        ("nowhere/", "no such file or folder"),  # a reference definition
    }
    broken = check_links(FIXTURE)
    assert {(b.target, b.reason) for b in broken} == expected
    assert all(b.file == "README.md" and b.line == _line_of(readme, b.target) for b in broken)
    # what resolves (a folder, an anchor, a duplicate heading's -1, a line, an image) or is skipped is not reported
    assert not {"sub/", "docs/guide.md#setup-1", "tool.py#L3", "img/plot.png"} & {b.target for b in broken}


def test_code_comments_and_external_links_are_not_read():
    text = ("[a](a.md) `[b](b.md)` ``x `[c](c.md)` `` <!-- [d](d.md) -->\n"
            "```py\n[e](e.md)\n```\n~~~~\n[f](f.md)\n~~~~\n[g](https://x.org/g.md) [h](<h i.md> \"t\")\n")
    found = [li.target for li in extract_links(text)]
    assert found == ["a.md", "https://x.org/g.md", "h i.md"]
    assert [links.is_external(t) for t in found] == [False, True, False]
    li = extract_links(text)[2]
    assert (li.line, text[li.start:li.end]) == (8, "h i.md")


def test_nested_image_link_reference_and_html_targets():
    text = "[![plot](p.png)](big.png)\n[ref]: r.md \"title\"\n[^1]: a footnote, not a link\n<img src='i.png'>\n"
    found = [(li.target, li.html) for li in extract_links(text)]
    assert found == [("p.png", False), ("big.png", False), ("r.md", False), ("i.png", True)]


def test_github_slugs_and_duplicates():
    assert github_slug("Hello, World!") == "hello-world"
    assert github_slug("2-3. Softmax: train/eval loop") == "2-3-softmax-traineval-loop"
    assert github_slug("a_b  c") == "a_b--c"
    text = ("# Setup\n## `make docs` [site](x.md)\n# Setup\nSetup\n-----\n"
            "```\n# not a heading\n```\n<a id=\"here\"></a>\n")
    anchors = heading_anchors(text)
    # GitHub numbers repeats -1, -2; Python-Markdown's toc writes them _1, _2
    assert anchors == {"setup": "setup", "make-docs-site": "make-docs-site", "setup-1": "setup_1",
                       "setup-2": "setup_2", "here": "here"}


def test_absolute_and_escaping_links_are_broken(tmp_path):
    (tmp_path / "README.md").write_text("[abs](/README.md) [up](../outside.md) [self](#readme) [bad](#nope)\n"
                                        "# README\n")
    reasons = {b.target: b.reason for b in check_links(tmp_path)}
    assert reasons == {"/README.md": "absolute path: write it relative to the file",
                       "../outside.md": "points outside the repository",
                       "#nope": "README.md has no heading with anchor #nope"}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_in_a_git_checkout_an_ignored_file_is_missing(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("secret/\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "notes.md").write_text("# notes\n")
    (tmp_path / "kept.md").write_text("# kept\n")  # untracked, not ignored: counts
    (tmp_path / "README.md").write_text("[s](secret/notes.md) [k](kept.md)\n")
    index = RepoIndex(tmp_path)
    assert index.git is not None
    assert index.markdown == ["README.md", "kept.md"]
    assert check_links(index=index) == [
        BrokenLink("README.md", 1, "secret/notes.md", "exists on disk but git ignores it: a clone lacks it")]


def test_outside_git_skipped_folders_are_not_walked(tmp_path):
    for rel in ("README.md", "runs/x/a.md", ".venv/b.md", "models/c/d.md", "site/e.md", "build/f.md",
                "models/README.md", "w/tests/fixtures/g.md", "w/h.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("[x](nowhere.md)\n")
    assert RepoIndex(tmp_path).markdown == ["README.md", "models/README.md", "w/h.md"]


def test_cli_exit_status(tmp_path, capsys):
    assert links.main(["--root", str(FIXTURE)]) == 1
    out = capsys.readouterr().out
    assert "README.md:7: docs/missing.md -> no such file or folder" in out
    assert out.strip().endswith("6 broken")
    (tmp_path / "README.md").write_text("# ok\n[self](#ok)\n")
    assert links.main(["--root", str(tmp_path)]) == 0
    assert links.main(["--root", str(tmp_path / "nope")]) == 2


def test_unlinked_artefacts(tmp_path):
    (tmp_path / "week01_x").mkdir()
    (tmp_path / "week01_x" / "README.md").write_text("# w\n")
    (tmp_path / "RESULTS.md").write_text("# r\n")
    (tmp_path / "TALK.md").write_text("# t\n")
    (tmp_path / "README.md").write_text("# home\n[w](week01_x/) [r](RESULTS.md) [gone](docs/qa.md)\n")
    got = unlinked_artefacts(["week01_x/", "RESULTS.md", "TALK.md", "docs/qa.md"], tmp_path,
                             nav=["README.md", "week01_x/README.md", "TALK.md"])
    assert {(u.path, u.reasons) for u in got} == {
        ("RESULTS.md", ("not a page of the site nav",)),
        ("TALK.md", ("not linked from README.md",)),
        ("docs/qa.md", ("not in the repository", "not linked from README.md", "not a page of the site nav")),
    }
    # the default nav is the one the site would build: RESULTS.md and the week's README are in it
    assert unlinked_artefacts(["week01_x", "RESULTS.md"], tmp_path) == []
    with pytest.raises(ValueError, match="relative to the repository root"):
        unlinked_artefacts(["../elsewhere"], tmp_path, nav=[])


def test_the_fixtures_are_not_walked_in_the_repository():
    assert not [f for f in RepoIndex(REPO).markdown if "tests/fixtures/" in f]


@pytest.mark.usefixtures("whole_repository")
def test_the_repository_has_no_broken_links():
    broken = check_links(REPO)
    assert broken == [], "broken links:\n" + "\n".join(map(str, broken))
