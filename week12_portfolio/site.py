"""``make docs``: the repository's Markdown as a browsable MkDocs site (Material theme), built with ``--strict``.

    python -m week12_portfolio.site [--out site] [--require-all]

Pages live all over the repository, so they are staged, rewritten, into ``build/site-src/pages/`` at their
repository paths (relative links keep working) next to a generated ``build/site-src/mkdocs.yml``; the sources are
never modified. A link to a folder becomes a link to its README page; a link to a repository file that is not a page
(``tools/logs_status.py``) copies that file in as a static file; a linked Markdown file that no nav section names is
pulled in under Docs. MkDocs 1.6's ``validation`` turns unresolved links and missing anchors into warnings, which
``--strict`` turns into a failed build. Headings get GitHub's anchors (pymdownx's slugify), so ``#fragment`` links
work on GitHub and on the site alike. The toolchain (requirements/docs.txt) is installed by ``make docs`` only.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from week12_portfolio.links import (
    REPO,
    Link,
    RepoIndex,
    extract_links,
    heading_texts,
    is_external,
    resolve,
    split_target,
)

STAGING = "build/site-src"
MARKER = ".generated-by-week12_portfolio.site"  # only a folder holding it is ever emptied by a rebuild
# written while week 12 is in progress: a page only when the file exists, a must with --require-all
PORTFOLIO_PAGES = (("RESULTS.md", "Results"), ("TALK.md", "Talk"), ("docs/qa.md", "Q&A"))
REQUIRED = ("README.md", "REPRODUCE.md", "CHANGELOG.md")  # with --require-all, beside PORTFOLIO_PAGES
_WEEK_README = re.compile(r"^week(\d+)_([^/]+)/README\.md$")
_LOG = re.compile(r"^docs/weekly-logs/(gpu/)?week(\d+)\.md$")
_LINE_ANCHOR = re.compile(r"^L\d+(-L?\d+)?$")
# Python-Markdown extensions; the toc's slugify is an object tag, which yaml.safe_dump cannot write
MARKDOWN_EXTENSIONS = """\
markdown_extensions:
  - tables
  - admonition
  - pymdownx.highlight
  - pymdownx.superfences
  - toc:
      permalink: true
      slugify: !!python/object/apply:pymdownx.slugs.slugify
        kwds:
          case: lower
"""
# every link and nav problem is a warning, which --strict turns into a failed build
VALIDATION = {
    "nav": {"omitted_files": "warn", "not_found": "warn", "absolute_links": "warn"},
    "links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn", "anchors": "warn"},
}


class SiteBuildError(RuntimeError):
    """The site cannot be built: a page it must have is missing, or ``mkdocs build --strict`` failed (the message
    quotes its warnings, which name the page and the link)."""


@dataclass
class SitePlan:
    """What the site holds: ``pages`` (repository path -> the rewritten Markdown), ``static`` (repository paths
    copied as they are), the MkDocs ``nav``, the ``site_name`` and the optional pages that are ``missing``."""

    pages: dict[str, str]
    static: list[str]
    nav: list[dict]
    site_name: str
    missing: list[str] = field(default_factory=list)

    @property
    def nav_pages(self) -> list[str]:
        """Every page path the nav names, in nav order."""
        out: list[str] = []

        def walk(items: list[dict]) -> None:
            for item in items:
                (value,) = item.values()
                walk(value) if isinstance(value, list) else out.append(value)

        walk(self.nav)
        return out


@dataclass(frozen=True)
class SiteBuild:
    """A built site: where (``out``, ``config``), how many ``pages`` and ``static_files``, and how long staging
    plus ``mkdocs build --strict`` took (``seconds``; ``mkdocs_seconds`` of them in MkDocs)."""

    out: Path
    config: Path
    pages: int
    static_files: int
    seconds: float
    mkdocs_seconds: float
    site_name: str
    missing: tuple[str, ...]  # the portfolio pages not yet written, left out


def page_title(index: RepoIndex, rel: str) -> str:
    """A page's nav title: its first heading less a closing remark in parentheses, else its path."""
    headings = heading_texts(index.text(rel))
    title = re.sub(r"\s*\([^()]*\)$", "", headings[0]) if headings else ""
    return title or rel


def _week_title(rel: str) -> str:
    m = _WEEK_README.match(rel)
    return f"{int(m.group(1)):02d} {m.group(2).replace('_', ' ')}"


def _log_title(rel: str) -> str:
    m = _LOG.match(rel)
    return f"Week {int(m.group(2)):02d} ({'GPU reference' if m.group(1) else 'CPU'})"


def _core_sections(index: RepoIndex, require_all: bool) -> tuple[list[tuple[str, list[tuple[str, str]]]], list[str]]:
    """The nav's sections before linked pages are pulled in, each [(title, page path)], and the optional pages that
    are missing.

    Raises:
        SiteBuildError: no README.md, or (``require_all``) a portfolio page, REPRODUCE.md or CHANGELOG.md missing.
    """
    md = list(index.markdown)
    have = set(md)
    must = REQUIRED + tuple(p for p, _ in PORTFOLIO_PAGES) if require_all else ("README.md",)
    missing_must = [p for p in must if p not in have]
    if missing_must:
        hint = " (or build without --require-all, which leaves out pages not yet written)" if require_all else ""
        raise SiteBuildError(f"the site needs {', '.join(missing_must)}, missing from {index.root}: write "
                             f"{'them' if len(missing_must) > 1 else 'it'}{hint}")
    docs = [f for f in md if re.fullmatch(r"docs/[^/]+\.md", f) and f not in ("docs/qa.md", "docs/reproduction-log.md")]
    logs = sorted((f for f in md if _LOG.match(f)),  # CPU logs by week, then the GPU ones
                  key=lambda f: (bool(_LOG.match(f).group(1)), int(_LOG.match(f).group(2))))
    weeks = sorted((f for f in md if _WEEK_README.match(f)), key=lambda f: int(_WEEK_README.match(f).group(1)))
    sections = [
        ("Home", [("Home", "README.md")]),
        ("Weeks", [(_week_title(f), f) for f in weeks]),
        ("Weekly logs", [(_log_title(f), f) for f in logs]),
        ("Results, talk, Q&A", [(title, p) for p, title in PORTFOLIO_PAGES if p in have]),
        ("Docs", [(page_title(index, f), f) for f in ("shared/README.md", *docs) if f in have]),
        ("Reproduce", [(page_title(index, f), f) for f in ("REPRODUCE.md", "docs/reproduction-log.md") if f in have]),
        ("Changelog", [("Changelog", "CHANGELOG.md")] if "CHANGELOG.md" in have else []),
    ]
    return sections, [p for p, _ in PORTFOLIO_PAGES if p not in have]


def _relink(index: RepoIndex, page: str, link: Link, pages: list[str], static: set[str]) -> str | None:
    """The rewritten target of one link of ``page`` (None: keep it), queueing the pages and static files it needs."""
    resolved, reason = resolve(index, page, link.target)
    if reason or resolved is None:
        return None  # MkDocs reports it, naming the page and the link
    path_part, frag = link.target.partition("#")[0], split_target(link.target)[1]
    new_path = path_part
    if index.is_dir(resolved):
        readme = posixpath.normpath(posixpath.join(resolved, "README.md"))
        if not index.is_file(readme):
            return None  # MkDocs reports "unrecognized relative link"
        resolved = readme
        new_path = (path_part.split("?")[0].rstrip("/") or ".") + "/README.md"
    if resolved.lower().endswith(".md"):
        if resolved not in pages:
            pages.append(resolved)
        if _LINE_ANCHOR.match(frag):
            frag = ""  # a rendered page has no line anchors
        else:
            frag = index.anchors(resolved).get(frag, frag)
        if link.html and path_part:  # MkDocs rewrites no raw HTML: point it at the built page (README.md -> index.html)
            stem = posixpath.splitext(new_path)[0]
            if posixpath.basename(stem) == "README":
                stem = stem[: -len("README")] + "index"
            new_path = stem + ".html"
    elif index.is_file(resolved):
        static.add(resolved)
    new = new_path + (f"#{frag}" if frag else "")
    return new if new != link.target else None


def _rewrite(index: RepoIndex, page: str, pages: list[str], static: set[str]) -> str:
    text = index.text(page)
    for link in reversed(extract_links(text)):
        if is_external(link.target):
            continue
        new = _relink(index, page, link, pages, static)
        if new is not None:
            text = text[:link.start] + new + text[link.end:]
    return text


def plan_site(root: Path | str = REPO, require_all: bool = False, index: RepoIndex | None = None) -> SitePlan:
    """The site of the repository at ``root``: its pages, rewritten (see the module's docstring), its static files
    and its nav. Reads the sources, writes nothing.

    Raises:
        SiteBuildError: a page the site must have is missing (README.md; with ``require_all`` also RESULTS.md,
            TALK.md, docs/qa.md, REPRODUCE.md and CHANGELOG.md).
    """
    index = index or RepoIndex(root)
    sections, missing = _core_sections(index, require_all)
    queue = [p for _, items in sections for _, p in items]
    static: set[str] = set()
    for log in (p for p in queue if _LOG.match(p)):  # a log's plots and CSVs, linked or not
        static.update(f for f in index.files_under(log[:-3]) if not f.lower().endswith(".md"))
    pages: dict[str, str] = {}
    i = 0
    while i < len(queue):  # breadth first: a page's links may pull in more pages
        pages[queue[i]] = _rewrite(index, queue[i], queue, static)
        i += 1
    in_nav = {p for _, items in sections for _, p in items}
    pulled = [(page_title(index, p), p) for p in queue if p not in in_nav]
    nav = []
    for name, items in sections:
        if name == "Docs":
            items = items + pulled
        if len(items) == 1 and name in ("Home", "Reproduce", "Changelog"):  # a lone page, not a section
            nav.append({name: items[0][1]})
        elif items:
            nav.append({name: [{title: p} for title, p in items]})
    site_name = page_title(index, "README.md")
    return SitePlan(pages, sorted(static), nav, site_name, missing)


def _prepare_dir(path: Path, what: str, root: Path) -> None:
    """Empty ``path`` for a rebuild, refusing any folder that is not ours to empty."""
    path = path.resolve()
    if path == root or path in root.parents or path == Path(path.anchor):
        raise SiteBuildError(f"{what} {path} is the repository or above it: choose a folder of its own (site/)")
    if path.exists():
        if not path.is_dir():
            raise SiteBuildError(f"{what} {path} is a file: remove it or choose another folder")
        entries = list(path.iterdir())
        ours = (path / MARKER).exists() or (path / "sitemap.xml").exists() or (path / "404.html").exists()
        if entries and not ours:
            raise SiteBuildError(f"{what} {path} holds files that no site build wrote: empty it or choose another "
                                 "folder (a rebuild deletes what is there)")
        shutil.rmtree(path)
    path.mkdir(parents=True)


def stage(plan: SitePlan, root: Path, staging: Path, out: Path) -> Path:
    """Write ``plan`` into ``staging`` (``pages/`` at repository paths, ``mkdocs.yml`` building into ``out``);
    returns the config's path. ``staging`` is emptied first."""
    _prepare_dir(staging, "the staging folder", root)
    (staging / MARKER).write_text("generated by python -m week12_portfolio.site; rebuilt on every run\n")
    docs = staging / "pages"
    for rel, text in plan.pages.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text, encoding="utf-8")
    for rel in plan.static:
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, docs / rel)
    config = {
        "site_name": plan.site_name,
        "docs_dir": "pages",
        "site_dir": str(out.resolve()),
        "use_directory_urls": False,  # page.html beside its folder of plots; also browsable from the disk
        "theme": {"name": "material", "font": False,  # no Google Fonts: the site loads offline
                  "features": ["navigation.sections", "navigation.top", "content.code.copy"]},
        "plugins": ["search"],
        "validation": VALIDATION,
        "nav": plan.nav,
    }
    path = staging / "mkdocs.yml"
    path.write_text("# generated by python -m week12_portfolio.site (make docs): edit site.py, not this file\n"
                    + yaml.safe_dump(config, sort_keys=False, allow_unicode=True) + MARKDOWN_EXTENSIONS)
    return path


def mkdocs_missing() -> str:
    """Why ``mkdocs build`` cannot run here ("" when it can)."""
    import importlib.util

    for module, package in (("mkdocs", "mkdocs"), ("material", "mkdocs-material"), ("pymdownx", "pymdown-extensions")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed: pip install -r requirements/docs.txt (make docs installs it)"
    return ""


def build_site(root: Path | str = REPO, out: Path | str = "site", require_all: bool = False,
               staging: Path | str | None = None) -> SiteBuild:
    """Stage the repository at ``root`` and run ``mkdocs build --strict`` into ``out`` (relative paths: to the
    current folder; emptied first, and only when a site build wrote it). ``staging`` defaults to
    ``<root>/build/site-src``.

    Raises:
        SiteBuildError: a required page is missing, mkdocs is not installed, ``out`` or ``staging`` is not a folder
            a build may empty, or the strict build failed (the message quotes MkDocs' warnings).
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    out = Path(out).resolve()
    staging = Path(staging).resolve() if staging else root / STAGING
    if why := mkdocs_missing():
        raise SiteBuildError(why)
    plan = plan_site(root, require_all)
    if out == staging or staging in out.parents or out in staging.parents:
        raise SiteBuildError(f"--out {out} and the staging folder {staging} overlap: choose another --out")
    config = stage(plan, root, staging, out)
    _prepare_dir(out, "--out", root)
    t1 = time.perf_counter()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, on every build otherwise
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)],
                          capture_output=True, text=True, env=env)
    t2 = time.perf_counter()
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("WARNING", "ERROR"))]
        detail = "\n".join(lines) or (proc.stdout + proc.stderr).strip()[-3000:]
        raise SiteBuildError(f"mkdocs build --strict failed ({config}); pages are named by repository path:\n"
                             f"{detail}\nFix the sources (python -m week12_portfolio.links lists broken links), "
                             "then rebuild")
    return SiteBuild(out, config, len(plan.pages), len(plan.static), round(t2 - t0, 2), round(t2 - t1, 2),
                     plan.site_name, tuple(plan.missing))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m week12_portfolio.site", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("site"), help="where the site goes (default site/)")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository (default: this checkout)")
    ap.add_argument("--require-all", action="store_true",
                    help="fail when RESULTS.md, TALK.md, docs/qa.md, REPRODUCE.md or CHANGELOG.md is missing")
    args = ap.parse_args(argv)
    try:
        built = build_site(args.root, args.out, args.require_all)
    except SiteBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{built.out}: {built.pages} pages, {built.static_files} static files, {built.seconds:.1f} s "
          f"(mkdocs build --strict {built.mkdocs_seconds:.1f} s); config {built.config}")
    if built.missing:
        print(f"not yet written, left out: {', '.join(built.missing)} (--require-all fails on them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
