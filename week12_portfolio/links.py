"""Every relative link of the repository's Markdown resolves: ``python -m week12_portfolio.links`` (exit 1 when any
is broken), and which key artefacts the README and the docs site fail to link.

Walked: the Markdown files git lists (tracked, plus untracked ones git does not ignore, so a page being written is
checked before its commit; files under ``tests/fixtures/`` are skipped, they are broken on purpose), or, outside a git
checkout, every ``*.md`` under the root but virtual environments, runs, datasets, models (its README aside), site/
and build/. Read: inline links and images ``[t](x)``, reference definitions ``[t]: x``, HTML ``src=``/``href=``;
not what fenced code blocks, inline code or HTML comments hold (indented code blocks are read as text). Skipped:
targets with a scheme (``https:``, ``mailto:``), ``//host``. A link is broken when its file or folder is not in the
repository (in a git checkout: git lists no such file; an ignored file on disk is missing from a clone), or when its
``#fragment`` names no heading of the Markdown file (GitHub's slugs), or a ``#L12`` line past the file's end.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
# not walked outside a git checkout (a git checkout ignores them already)
SKIP_DIRS = ("runs", "datasets", "models", "site", "build", "node_modules")
SKIPPED_FIXTURES = "tests/fixtures/"

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_BACKTICKS = re.compile(r"`+")
# `](target "title")`: the target may hold one level of balanced parentheses, or be written `<...>`
_INLINE = re.compile(r"\]\(\s*(?P<t><[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                     r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?\s*\)")
_REFDEF = re.compile(r"^ {0,3}\[(?!\^)[^\]\n]+\]:[ \t]*(?P<t><[^>\n]*>|\S+)", re.M)
_HTML = re.compile(r"<[a-zA-Z][^<>]*?\b(?:src|href)\s*=\s*(?:\"(?P<d>[^\"]*)\"|'(?P<s>[^']*)')", re.S)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L?(\d+))?$")
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_ID = re.compile(r"<[a-zA-Z][^<>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")
_MD_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_NOT_SLUG = re.compile(r"[^\w\- ]")


@dataclass(frozen=True)
class Link:
    """One link of a Markdown text: its 1-based ``line``, its ``target`` as written, the target's character span
    ``[start, end)`` in the text (to rewrite it in place) and whether it sits in raw HTML (``src=``/``href=``)."""

    line: int
    target: str
    start: int
    end: int
    html: bool = False


@dataclass(frozen=True)
class BrokenLink:
    """A relative link that does not resolve: the Markdown ``file`` (repository path), ``line``, ``target`` as
    written and why."""

    file: str
    line: int
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.target} -> {self.reason}"


@dataclass(frozen=True)
class UnlinkedArtefact:
    """A key artefact the README or the site's nav does not reach; ``reasons`` says which (or that it is missing)."""

    path: str
    reasons: tuple[str, ...]


def _blank(s: str) -> str:
    return re.sub(r"[^\n]", " ", s)


def _mask_fences(text: str) -> str:
    lines, fence = text.splitlines(keepends=True), ""
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" \n`~"):
                fence = ""
            lines[i] = _blank(line)
        elif m and not (m.group(1)[0] == "`" and "`" in line[m.end():]):  # an info string may not hold a backtick
            fence, lines[i] = m.group(1), _blank(line)
    return _COMMENT.sub(lambda m: _blank(m.group()), "".join(lines))


def mask_code(text: str) -> str:
    """``text`` with fenced code blocks, HTML comments and inline code spans blanked out (newlines kept), so that
    character offsets and line numbers stay those of ``text``."""
    out, pos = _mask_fences(text), 0
    while m := _BACKTICKS.search(out, pos):
        close = re.compile(rf"(?<!`)`{{{len(m.group())}}}(?!`)").search(out, m.end())
        if not close:
            pos = m.end()
            continue
        out = out[:m.start()] + _blank(out[m.start():close.end()]) + out[close.end():]
        pos = close.end()
    return out


def extract_links(text: str) -> list[Link]:
    """Every link target of a Markdown ``text`` outside code and comments, in order of position; external ones too
    (see :func:`is_external`)."""
    masked, found = mask_code(text), []
    for rx in (_INLINE, _REFDEF):
        for m in rx.finditer(masked):
            start, end = m.span("t")
            if masked[start] == "<":
                start, end = start + 1, end - 1
            found.append((start, end, False))
    for m in _HTML.finditer(masked):
        found.append((*(m.span("d") if m.group("d") is not None else m.span("s")), True))
    return [Link(text.count("\n", 0, start) + 1, text[start:end], start, end, html)
            for start, end, html in sorted(set(found)) if end > start]


def is_external(target: str) -> bool:
    """A target with a scheme (``https:``, ``mailto:``, ``data:``) or a host (``//host``): not a repository path."""
    return bool(_SCHEME.match(target)) or target.startswith("//")


def split_target(target: str) -> tuple[str, str]:
    """``path#fragment?query`` -> (the URL-decoded path, the URL-decoded fragment); either may be ""."""
    path, _, frag = target.partition("#")
    return unquote(path.partition("?")[0]), unquote(frag)


def heading_texts(text: str) -> list[str]:
    """The plain text of every ATX (``## x``) and setext heading of a Markdown ``text``, outside code blocks;
    links keep their text, HTML tags go."""
    lines, out = _mask_fences(text).splitlines(), []
    for i, line in enumerate(lines):
        m = _ATX.match(line)
        if m and not re.match(r"^ {0,3}#{7}", line):
            out.append(m.group(1) or "")
        elif (_SETEXT.match(line) and i > 0 and lines[i - 1].strip() and not _ATX.match(lines[i - 1])
              and not re.match(r"^ {0,3}([-*+]|\d+[.)])\s|^\s*\|", lines[i - 1])):
            out.append(lines[i - 1].strip())
    return [_TAG.sub("", _MD_LINK_TEXT.sub(r"\1", h)).replace("`", "").strip() for h in out]


def github_slug(heading: str) -> str:
    """GitHub's anchor for one heading text: lowercase, every character but letters, digits, ``_``, ``-`` and
    spaces dropped, spaces -> ``-`` (duplicates are numbered by :func:`heading_anchors`)."""
    return _NOT_SLUG.sub("", heading.strip().lower()).replace(" ", "-")


def heading_anchors(text: str) -> dict[str, str]:
    """GitHub's anchor of every heading of a Markdown ``text`` -> the id Python-Markdown's ``toc`` gives it with a
    GitHub-like slugify: equal but for repeated headings, ``x-1`` on GitHub and ``x_1`` in ``toc``. HTML
    ``id=``/``name=`` anchors map to themselves."""
    seen: dict[str, int] = {}
    anchors: dict[str, str] = {}
    for heading in heading_texts(text):
        base = slug = github_slug(heading)
        while slug in seen:  # github-slugger: count up from the base until the slug is new
            seen[base] += 1
            slug = f"{base}-{seen[base]}"
        seen[slug] = 0
        anchors[slug] = base if slug == base else f"{base}_{seen[base]}"
    for m in _HTML_ID.finditer(mask_code(text)):
        anchors.setdefault(m.group(1), m.group(1))
    return anchors


class RepoIndex:
    """Which files and folders a repository has. In a git checkout (``root`` is its top level): the files git lists,
    tracked or untracked but not ignored, that exist on disk. Otherwise: what is on disk, and the Markdown walked is
    every ``*.md`` but those under virtual environments, dot-folders, runs, datasets, models (its README aside),
    site/ and build/."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"repository root {root}: no such folder")
        self.git = self._git_files()
        self.files = frozenset(self.git or ())
        self.dirs = frozenset(p for f in self.files for p in _parents(f))
        self._text: dict[str, str] = {}
        self._anchors: dict[str, dict[str, str]] = {}

    def _git_files(self) -> set[str] | None:
        try:
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=self.root, capture_output=True,
                                 text=True, check=True).stdout.strip()
            if Path(top).resolve() != self.root:
                return None
            tracked, untracked = (subprocess.run(["git", "ls-files", "-z", *opts], cwd=self.root, capture_output=True,
                                                 text=True, check=True).stdout.split("\0")
                                  for opts in (["--cached"], ["--others", "--exclude-standard"]))
        except (OSError, subprocess.CalledProcessError):
            return None
        # an untracked file in a generated folder (site/, build/) before .gitignore names it is not a source
        untracked = [f for f in untracked if f.split("/")[0] not in SKIP_DIRS]
        return {f for f in (*tracked, *untracked) if f and (self.root / f).is_file()}

    def is_file(self, rel: str) -> bool:
        """Whether the repository path ``rel`` (posix, normalised) is a file of the repository."""
        return rel in self.files if self.git is not None else (self.root / rel).is_file()

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a folder of the repository ("." is the root)."""
        return rel == "." or (rel in self.dirs if self.git is not None else (self.root / rel).is_dir())

    def files_under(self, folder: str) -> list[str]:
        """The repository files under ``folder`` (any depth), sorted."""
        if self.git is not None:
            return sorted(f for f in self.files if f.startswith(folder.rstrip("/") + "/"))
        base = self.root / folder
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    @cached_property
    def markdown(self) -> list[str]:
        """The Markdown files walked, sorted (files under ``tests/fixtures/`` left out: broken on purpose)."""
        if self.git is not None:
            found = [f for f in self.files if f.lower().endswith(".md")]
        else:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                if rel_dir == ".":  # models/ is walked for its README only
                    dirnames[:] = [d for d in dirnames if (d == "models" or d not in SKIP_DIRS) and d[0] != "."]
                elif rel_dir == "models":
                    dirnames[:] = []
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                for name in filenames:
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                    if name.lower().endswith(".md") and (not rel.startswith("models/") or rel == "models/README.md"):
                        found.append(rel)
        return sorted(f for f in found if SKIPPED_FIXTURES not in f"/{f}")

    def text(self, rel: str) -> str:
        if rel not in self._text:
            self._text[rel] = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        return self._text[rel]

    def anchors(self, rel: str) -> dict[str, str]:
        """:func:`heading_anchors` of the Markdown file ``rel`` (cached)."""
        if rel not in self._anchors:
            self._anchors[rel] = heading_anchors(self.text(rel))
        return self._anchors[rel]


def _parents(rel: str) -> Iterable[str]:
    parts = rel.split("/")[:-1]
    return ("/".join(parts[:i]) for i in range(1, len(parts) + 1))


def resolve(index: RepoIndex, file: str, target: str) -> tuple[str | None, str]:
    """Resolve a relative ``target`` written in the repository file ``file``: (its repository path, "" when it
    resolves) or (the path or None, why it is broken). The path of a folder has no trailing slash; the root is "."."""
    path, frag = split_target(target)
    if not path:
        resolved = file
    elif path.startswith(("/", "\\")):
        return None, "absolute path: write it relative to the file"
    else:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(file), path))
        if resolved == ".." or resolved.startswith("../"):
            return None, "points outside the repository"
    if not index.is_file(resolved) and not index.is_dir(resolved):
        ignored = index.git is not None and (index.root / resolved).exists()
        return resolved, ("exists on disk but git ignores it: a clone lacks it" if ignored
                          else "no such file or folder")
    if frag and index.is_file(resolved):
        return resolved, _fragment_problem(index, resolved, frag)
    return resolved, ""


def _fragment_problem(index: RepoIndex, rel: str, frag: str) -> str:
    m = _LINE_ANCHOR.match(frag)
    if m:
        n_lines = len(index.text(rel).splitlines())
        last = max(int(m.group(1)), int(m.group(2) or 0))
        return "" if 1 <= last <= n_lines else f"line {last} is past the end of {rel} ({n_lines} lines)"
    if not rel.lower().endswith(".md") or frag in index.anchors(rel):
        return ""
    return f"{rel} has no heading with anchor #{frag}"


def check_links(root: Path | str = REPO, index: RepoIndex | None = None) -> list[BrokenLink]:
    """Every broken relative link of the Markdown files of the repository at ``root`` (see the module's docstring),
    in file and line order; [] when all resolve."""
    index = index or RepoIndex(root)
    broken = []
    for file in index.markdown:
        for link in extract_links(index.text(file)):
            if is_external(link.target):
                continue
            _, reason = resolve(index, file, link.target)
            if reason:
                broken.append(BrokenLink(file, link.line, link.target, reason))
    return broken


def linked_paths(index: RepoIndex, file: str) -> set[str]:
    """The repository paths the relative links of the Markdown ``file`` resolve to (broken ones left out)."""
    out = set()
    for link in extract_links(index.text(file)):
        if not is_external(link.target):
            resolved, reason = resolve(index, file, link.target)
            if resolved and not reason:
                out.add(resolved)
    return out


def unlinked_artefacts(artefacts: Iterable[str], root: Path | str = REPO,
                       nav: Iterable[str] | None = None) -> list[UnlinkedArtefact]:
    """Which key ``artefacts`` (repository paths of files or folders) are missing, or not linked directly from
    README.md, or not pages of the docs site's nav; [] when the README and the site reach every one.

    A folder counts as linked or in the nav through its README.md too. ``nav``: the nav's page paths; None -> the
    nav :mod:`week12_portfolio.site` would build for ``root``.

    Raises:
        ValueError: an artefact path that is absolute or leaves the repository (give it relative to the root).
    """
    index = RepoIndex(root)
    if nav is None:
        from week12_portfolio.site import plan_site

        nav = plan_site(index.root, index=index).nav_pages
    nav_set = set(nav)
    from_readme = linked_paths(index, "README.md") if index.is_file("README.md") else set()
    out = []
    for artefact in artefacts:
        rel = posixpath.normpath(artefact.replace("\\", "/"))
        if rel.startswith(("/", "../")) or rel == "..":
            raise ValueError(f"key artefact {artefact!r}: give a path relative to the repository root")
        aliases = {rel, posixpath.join(rel, "README.md")} if index.is_dir(rel) else {rel}
        reasons = []
        if not (index.is_file(rel) or index.is_dir(rel)):
            reasons.append("not in the repository")
        if not aliases & from_readme:
            reasons.append("not linked from README.md")
        if not aliases & nav_set:
            reasons.append("not a page of the site nav")
        if reasons:
            out.append(UnlinkedArtefact(rel, tuple(reasons)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m week12_portfolio.links", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO, help="the repository to walk (default: this checkout)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: --root {args.root}: no such folder", file=sys.stderr)
        return 2
    index = RepoIndex(args.root)
    broken = check_links(index=index)
    for b in broken:
        print(b)
    n_links = sum(not is_external(li.target) for f in index.markdown for li in extract_links(index.text(f)))
    print(f"{len(index.markdown)} Markdown files, {n_links} relative links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
