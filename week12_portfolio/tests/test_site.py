"""The docs site: what a small repository's site holds, that a broken link fails the strict build, the browser
check on the built site (and on a page whose image does not load), and the real repository's site."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from week12_portfolio import browser, site
from week12_portfolio.links import REPO
from week12_portfolio.site import SiteBuildError, build_site, mkdocs_missing, plan_site

needs_mkdocs = pytest.mark.skipif(bool(mkdocs_missing()), reason=mkdocs_missing() or "mkdocs is installed")
needs_browser = pytest.mark.skipif(bool(browser.browser_missing()), reason=browser.browser_missing() or "ok")


def _png(path: Path, w: int = 6, h: int = 4) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x30\x90\xd0" * w for _ in range(h))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


FILES = {
    "README.md": "# Fixture Site\n\nSee [week 1](week01_demo/), [its log](docs/weekly-logs/week01.md), the second\n"
                 "[Setup](docs/weekly-logs/week01.md#setup-1) and the [changelog](CHANGELOG.md).\n\n"
                 '<a href="week01_demo/">week 1 in HTML</a>\n',
    "week01_demo/README.md": "# Week 1\n\nThe [trainer](train.py), the [data folder](data/) and the\n"
                             "[log's results](../docs/weekly-logs/week01.md#results).\n",
    "week01_demo/train.py": "print('training')\n",
    "week01_demo/data/README.md": "# Data\n\nNot in any nav section: pulled in by the link above.\n",
    "docs/weekly-logs/week01.md": "# Week 01 log\n\n## Results\n\n![loss](week01/loss.png)\n\n"
                                  "[CSV](week01/loss.csv)\n\n## Setup\n\n## Setup\n",
    "docs/weekly-logs/week01/loss.csv": "step,loss\n1,2.3\n",
    "CHANGELOG.md": "# Changelog\n",
}


def _repo(root: Path, extra: dict[str, str] | None = None) -> Path:
    for rel, text in {**FILES, **(extra or {})}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _png(root / "docs/weekly-logs/week01/loss.png")
    return root


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def test_plan_pages_nav_static_and_rewrites(tmp_path):
    root = _repo(tmp_path / "repo")
    plan = plan_site(root)
    assert plan.site_name == "Fixture Site"
    assert plan.nav == [
        {"Home": "README.md"},
        {"Weeks": [{"01 demo": "week01_demo/README.md"}]},
        {"Weekly logs": [{"Week 01 (CPU)": "docs/weekly-logs/week01.md"}]},
        {"Docs": [{"Data": "week01_demo/data/README.md"}]},  # pulled in by a folder link
        {"Changelog": "CHANGELOG.md"},
    ]
    assert sorted(plan.pages) == sorted(plan.nav_pages)
    assert plan.static == ["docs/weekly-logs/week01/loss.csv", "docs/weekly-logs/week01/loss.png",
                           "week01_demo/train.py"]
    assert plan.missing == ["RESULTS.md", "TALK.md", "docs/qa.md"]
    week = plan.pages["week01_demo/README.md"]
    assert "[data folder](data/README.md)" in week
    assert "[trainer](train.py)" in week
    home = plan.pages["README.md"]
    assert "[week 1](week01_demo/README.md)" in home
    assert "week01.md#setup_1)" in home
    assert '<a href="week01_demo/index.html">' in home  # raw HTML points at the built page


def test_require_all_names_the_missing_pages(tmp_path):
    root = _repo(tmp_path / "repo")
    with pytest.raises(SiteBuildError, match=r"needs REPRODUCE\.md, RESULTS\.md, TALK\.md, docs/qa\.md, missing"):
        plan_site(root, require_all=True)
    (root / "README.md").unlink()
    with pytest.raises(SiteBuildError, match="README.md"):
        plan_site(root)


def test_portfolio_pages_join_the_nav_when_written(tmp_path):
    extra = {"RESULTS.md": "# Results\n", "docs/qa.md": "# Q&A\n", "TALK.md": "# Talk\n", "REPRODUCE.md": "# R\n"}
    plan = plan_site(_repo(tmp_path / "repo", extra), require_all=True)
    assert {"Results, talk, Q&A": [{"Results": "RESULTS.md"}, {"Talk": "TALK.md"}, {"Q&A": "docs/qa.md"}]} in plan.nav
    assert {"Reproduce": "REPRODUCE.md"} in plan.nav
    assert plan.missing == []


def test_a_rebuild_empties_only_a_folder_a_build_wrote(tmp_path):
    root = _repo(tmp_path / "repo")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine\n")
    with pytest.raises(SiteBuildError, match="holds files that no site build wrote"):
        site._prepare_dir(notes, "--out", root)
    with pytest.raises(SiteBuildError, match="the repository or above it"):
        site._prepare_dir(root, "--out", root)
    assert (notes / "keep.txt").read_text() == "mine\n"


@needs_mkdocs
def test_strict_build_of_a_small_repository(tmp_path):
    root = _repo(tmp_path / "repo")
    before = _digests(root)
    built = build_site(root, tmp_path / "site", staging=tmp_path / "stage")
    out = tmp_path / "site"
    for rel in ("index.html", "week01_demo/index.html", "week01_demo/data/index.html", "week01_demo/train.py",
                "docs/weekly-logs/week01.html", "docs/weekly-logs/week01/loss.png", "CHANGELOG.html"):
        assert (out / rel).is_file(), rel
    assert (built.pages, built.static_files, built.site_name) == (5, 3, "Fixture Site")
    assert built.seconds >= built.mkdocs_seconds > 0
    assert 'href="data/index.html"' in (out / "week01_demo/index.html").read_text()
    assert _digests(root) == before  # the sources are never rewritten
    assert (tmp_path / "stage" / "mkdocs.yml").is_file()
    build_site(root, out, staging=tmp_path / "stage")  # a rebuild replaces its own output


@needs_mkdocs
@pytest.mark.parametrize(("link", "named"), [("[gone](missing.py)", "missing.py"),
                                             ("[bad anchor](../CHANGELOG.md#v9)", "#v9"),
                                             ("[no readme](empty/)", "empty/")])
def test_a_broken_link_fails_the_strict_build(tmp_path, link, named):
    root = _repo(tmp_path / "repo", {"week01_demo/README.md": f"# Week 1\n\n{link}\n", "week01_demo/empty/x.txt": ""})
    with pytest.raises(SiteBuildError, match="mkdocs build --strict failed") as e:
        build_site(root, tmp_path / "site", staging=tmp_path / "stage")
    assert named in str(e.value)
    assert "week01_demo/README.md" in str(e.value)


@needs_mkdocs
@needs_browser
def test_browser_opens_the_built_site(tmp_path):
    root = _repo(tmp_path / "repo")
    build_site(root, tmp_path / "site", staging=tmp_path / "stage")
    res = browser.check_site(tmp_path / "site", "Fixture Site")
    assert res.problems == ()
    assert res.pages == ("index.html", "docs/weekly-logs/week01.html")
    assert (res.images_loaded, res.images_total) == (1, 1)
    assert res.titles == ("Fixture Site", "Week 01 (CPU) - Fixture Site")  # Material: the nav title - the site


@needs_browser
def test_browser_reports_an_image_that_did_not_load(tmp_path):
    (tmp_path / "docs/weekly-logs/week01").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<title>Fixture Site</title><p>home</p>")
    _png(tmp_path / "docs/weekly-logs/week01/ok.png")
    (tmp_path / "docs/weekly-logs/week01.html").write_text(
        '<title>Another site</title><img src="week01/ok.png"><img src="week01/missing.png">')
    res = browser.check_site(tmp_path, "Fixture Site")
    assert (res.images_loaded, res.images_total, res.broken_images) == (1, 2, ("week01/missing.png",))
    assert res.problems == ("docs/weekly-logs/week01.html: title 'Another site' does not name the site "
                            "'Fixture Site'", "docs/weekly-logs/week01.html: image week01/missing.png did not load")


def test_find_log_page_needs_a_log_with_an_image(tmp_path):
    (tmp_path / "docs/weekly-logs").mkdir(parents=True)
    (tmp_path / "docs/weekly-logs/week01.html").write_text("<p>no plot</p>")
    with pytest.raises(FileNotFoundError, match="no weekly log page with an image"):
        browser.find_log_page(tmp_path)
    (tmp_path / "docs/weekly-logs/gpu").mkdir()
    (tmp_path / "docs/weekly-logs/gpu/week01.html").write_text('<img src="a.png">')
    (tmp_path / "docs/weekly-logs/week02.html").write_text('<img src="b.png">')
    assert browser.find_log_page(tmp_path) == "docs/weekly-logs/week02.html"  # CPU logs first


@needs_mkdocs
@pytest.mark.usefixtures("whole_repository")
def test_the_real_repository_builds_strict(tmp_path):
    plan = plan_site(REPO)
    built = build_site(REPO, tmp_path / "site", staging=tmp_path / "stage")
    assert built.pages == len(plan.pages)
    html = [p.removesuffix("README.md").removesuffix(".md") + ("index.html" if p.endswith("README.md") else ".html")
            for p in plan.nav_pages]
    assert [h for h in html if not (tmp_path / "site" / h).is_file()] == []
